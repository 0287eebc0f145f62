//! IDX, the format of MNIST and Fashion-MNIST (<http://yann.lecun.com/exdb/mnist/>), usually
//! gzip-compressed: a magic `00 00 TT NN` (element type TT, NN dimensions), NN big-endian `u32`
//! dimensions, then the elements. Only unsigned bytes (TT = 0x08) are accepted, as in the data
//! sets we use. The decompressed size is checked against the dimensions while reading, so a
//! crafted file cannot make us allocate more than it announces within a fixed cap.

use crate::error::{Error, ParseError, Result};
use flate2::read::GzDecoder;
use std::io::Read;
use std::path::Path;

/// Largest element count accepted (1 GiB of bytes).
pub const MAX_ELEMENTS: u64 = 1 << 30;

/// A decoded IDX array of unsigned bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxArray {
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

/// Decodes an (already decompressed) IDX stream.
pub fn parse_idx(mut r: impl Read) -> Result<IdxArray, ParseError> {
    let mut magic = [0u8; 4];
    r.read_exact(&mut magic)
        .map_err(|e| ParseError::new("magic", 0, format!("cannot read: {e}")))?;
    if magic[0] != 0 || magic[1] != 0 {
        return Err(ParseError::new(
            "magic",
            0,
            format!("expected 00 00, found {:02x} {:02x}", magic[0], magic[1]),
        ));
    }
    if magic[2] != 0x08 {
        return Err(ParseError::new(
            "magic.type",
            2,
            format!(
                "element type 0x{:02x} is not unsigned byte (0x08)",
                magic[2]
            ),
        ));
    }
    let nd = magic[3] as usize;
    if nd == 0 || nd > 4 {
        return Err(ParseError::new(
            "magic.n_dims",
            3,
            format!("{nd} dimensions (expected 1 to 4)"),
        ));
    }
    let mut dims = Vec::with_capacity(nd);
    let mut total: u64 = 1;
    for i in 0..nd {
        let mut b = [0u8; 4];
        let at = 4 + 4 * i as u64;
        r.read_exact(&mut b)
            .map_err(|e| ParseError::new(format!("dims[{i}]"), at, format!("cannot read: {e}")))?;
        let d = u32::from_be_bytes(b);
        total = total.saturating_mul(u64::from(d));
        if total > MAX_ELEMENTS {
            return Err(ParseError::new(
                format!("dims[{i}]"),
                at,
                format!("more than {MAX_ELEMENTS} elements"),
            ));
        }
        dims.push(d as usize);
    }
    let header = 4 + 4 * nd as u64;
    let mut data = Vec::new();
    // Read one byte more than announced to detect trailing garbage; never more.
    r.take(total + 1)
        .read_to_end(&mut data)
        .map_err(|e| ParseError::new("data", header, format!("cannot read: {e}")))?;
    if (data.len() as u64) < total {
        return Err(ParseError::new(
            "data",
            header,
            format!("{} elements announced, only {} present", total, data.len()),
        ));
    }
    if data.len() as u64 > total {
        return Err(ParseError::new(
            "data",
            header + total,
            "bytes after the announced elements",
        ));
    }
    Ok(IdxArray { dims, data })
}

/// Reads an IDX file, gzip-compressed when its name ends in `.gz`.
pub fn read_idx(path: &Path) -> Result<IdxArray> {
    let f = crate::guard::open_input(path, "IDX file")?;
    let r = std::io::BufReader::new(f);
    let parsed = if path.extension().is_some_and(|e| e == "gz") {
        parse_idx(GzDecoder::new(r))
    } else {
        parse_idx(r)
    };
    parsed.map_err(|e| Error::malformed(path, "IDX", e))
}

/// A labelled image data set, pixels row-major, one byte each.
#[derive(Debug, Clone)]
pub struct ImageSet {
    pub rows: usize,
    pub cols: usize,
    /// `n * rows * cols` pixels.
    pub pixels: Vec<u8>,
    pub labels: Vec<u8>,
    /// Largest possible pixel value (255 for MNIST-style data, 16 for digits).
    pub max_value: u8,
    pub n_classes: usize,
}

impl ImageSet {
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.rows * self.cols;
        &self.pixels[i * n..(i + 1) * n]
    }
}

/// Fashion-MNIST's class names, by label.
pub const FASHION_MNIST_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// Reads a pair of IDX files (images `n×rows×cols`, labels `n`) into an [`ImageSet`].
pub fn read_image_set(images: &Path, labels: &Path, n_classes: usize) -> Result<ImageSet> {
    let im = read_idx(images)?;
    let lb = read_idx(labels)?;
    let bad = |path: &Path, field: &str, reason: String| {
        Error::malformed(path, "IDX", ParseError::new(field, 0, reason))
    };
    if im.dims.len() != 3 {
        return Err(bad(
            images,
            "dims",
            format!("images need 3 dimensions, found {:?}", im.dims),
        ));
    }
    if lb.dims.len() != 1 || lb.dims[0] != im.dims[0] {
        return Err(bad(
            labels,
            "dims",
            format!("labels {:?} do not match {} images", lb.dims, im.dims[0]),
        ));
    }
    if let Some((i, l)) = lb
        .data
        .iter()
        .enumerate()
        .find(|(_, &l)| l as usize >= n_classes)
    {
        return Err(bad(
            labels,
            "data",
            format!("label {l} of item {i} is not below {n_classes}"),
        ));
    }
    Ok(ImageSet {
        rows: im.dims[1],
        cols: im.dims[2],
        pixels: im.data,
        labels: lb.data,
        max_value: 255,
        n_classes,
    })
}

/// Fashion-MNIST's train and test sets from the folder `scripts/fetch-assets.sh` fills.
pub fn read_fashion_mnist(dir: &Path) -> Result<(ImageSet, ImageSet)> {
    let train = read_image_set(
        &dir.join("train-images-idx3-ubyte.gz"),
        &dir.join("train-labels-idx1-ubyte.gz"),
        10,
    )?;
    let test = read_image_set(
        &dir.join("t10k-images-idx3-ubyte.gz"),
        &dir.join("t10k-labels-idx1-ubyte.gz"),
        10,
    )?;
    Ok((train, test))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut v = vec![0, 0, 8, dims.len() as u8];
        for d in dims {
            v.extend_from_slice(&d.to_be_bytes());
        }
        v.extend_from_slice(data);
        v
    }

    #[test]
    fn decodes_a_small_array() {
        let a = parse_idx(&idx(&[2, 3], &[1, 2, 3, 4, 5, 6])[..]).unwrap();
        assert_eq!(a.dims, vec![2, 3]);
        assert_eq!(a.data, vec![1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn rejects_malformed_input() {
        let cases: &[(&str, Vec<u8>, &str)] = &[
            ("empty", vec![], "magic"),
            ("bad magic", vec![1, 0, 8, 1, 0, 0, 0, 1, 0], "magic"),
            (
                "float type",
                vec![0, 0, 0x0d, 1, 0, 0, 0, 1, 0, 0, 0, 0],
                "magic.type",
            ),
            ("zero dims", vec![0, 0, 8, 0], "magic.n_dims"),
            ("truncated dims", vec![0, 0, 8, 2, 0, 0, 0, 1], "dims[1]"),
            ("huge dims", idx(&[1 << 16, 1 << 16], &[]), "dims[1]"),
            ("short data", idx(&[10], &[1, 2, 3]), "data"),
            ("trailing data", idx(&[2], &[1, 2, 3]), "data"),
        ];
        for (what, bytes, field) in cases {
            let err = parse_idx(&bytes[..]).expect_err(what);
            assert_eq!(&err.field, field, "{what}: {err}");
        }
    }
}
