//! The embedded default data set: scikit-learn's copy of the UCI optical handwritten digits
//! (1,797 images of 8×8 pixels with values 0..=16, ten classes), shipped in `data/` under its
//! BSD-3 licence so that `frugal run` works without any download.

use crate::error::{Error, ParseError, Result};
use crate::idx::ImageSet;
use flate2::read::GzDecoder;
use std::io::Read;
use std::path::Path;

/// `digits.csv.gz` as shipped with scikit-learn 1.9.1.
pub const DIGITS_CSV_GZ: &[u8] = include_bytes!("../../../data/digits.csv.gz");

/// Parses the digits CSV (64 pixel columns then the label, no header).
pub fn parse_digits_csv(text: &str) -> Result<ImageSet, ParseError> {
    let mut pixels = Vec::with_capacity(1797 * 64);
    let mut labels = Vec::with_capacity(1797);
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let field = || format!("line {}", i + 1);
        let vals: Vec<&str> = line.split(',').collect();
        if vals.len() != 65 {
            return Err(ParseError::new(
                field(),
                0,
                format!("{} columns, expected 65", vals.len()),
            ));
        }
        for (j, v) in vals.iter().enumerate() {
            let x: f64 = v.trim().parse().map_err(|_| {
                ParseError::new(
                    field(),
                    0,
                    format!("column {} is not a number: {v:?}", j + 1),
                )
            })?;
            let max = if j == 64 { 9.0 } else { 16.0 };
            if !(0.0..=max).contains(&x) || x.fract() != 0.0 {
                return Err(ParseError::new(
                    field(),
                    0,
                    format!("column {} value {x} is not an integer in 0..={max}", j + 1),
                ));
            }
            if j == 64 {
                labels.push(x as u8)
            } else {
                pixels.push(x as u8)
            }
        }
    }
    Ok(ImageSet {
        rows: 8,
        cols: 8,
        pixels,
        labels,
        max_value: 16,
        n_classes: 10,
    })
}

/// The embedded digits data set.
pub fn embedded_digits() -> ImageSet {
    let mut text = String::new();
    GzDecoder::new(DIGITS_CSV_GZ)
        .read_to_string(&mut text)
        .expect("embedded digits data is valid gzip");
    parse_digits_csv(&text).expect("embedded digits data is valid")
}

/// Reads a digits-style CSV (optionally gzip-compressed) from a file.
pub fn read_digits_csv(path: &Path) -> Result<ImageSet> {
    let bytes = crate::guard::read_capped(path, "digits CSV", 64 << 20)?;
    let mut text = String::new();
    let res = if path.extension().is_some_and(|e| e == "gz") {
        // Decompressed size capped too (a gzip bomb stops at 256 MiB + 1 byte).
        GzDecoder::new(&bytes[..])
            .take((256 << 20) + 1)
            .read_to_string(&mut text)
            .and_then(|n| {
                if n > 256 << 20 {
                    Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        "decompresses to more than 256 MiB",
                    ))
                } else {
                    Ok(())
                }
            })
    } else {
        String::from_utf8(bytes)
            .map(|t| text = t)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    };
    res.map_err(|e| Error::io(path, "decoding CSV", e))?;
    parse_digits_csv(&text).map_err(|e| Error::malformed(path, "digits CSV", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_digits_has_1797_balanced_images() {
        let d = embedded_digits();
        assert_eq!(d.len(), 1797);
        assert_eq!(d.pixels.len(), 1797 * 64);
        let mut counts = [0usize; 10];
        d.labels.iter().for_each(|&l| counts[l as usize] += 1);
        // scikit-learn documents about 180 images per class.
        assert!(
            counts.iter().all(|&c| (174..=183).contains(&c)),
            "{counts:?}"
        );
        assert_eq!(*d.pixels.iter().max().unwrap(), 16);
        assert_eq!(&d.image(0)[..8], &[0, 0, 5, 13, 9, 1, 0, 0]);
        assert_eq!(d.labels[0], 0);
    }

    #[test]
    fn rejects_bad_rows() {
        assert!(parse_digits_csv("1,2,3").is_err());
        let mut row = vec!["0"; 64];
        row.push("10");
        assert!(parse_digits_csv(&row.join(","))
            .unwrap_err()
            .reason
            .contains("0..=9"));
    }
}
