//! The image data sets classifiers train and are judged on: one name table (`--data` of every
//! command, recipes and reports spell it alike) and one loader.

use crate::Error;
use frugal_formats::idx::ImageSet;

frugal_formats::name_table! {
    "kebab-case";
    /// A data set of labelled images.
    pub enum Dataset {
        /// Fashion-MNIST: its 60,000 training and 10,000 test images (Debian's package, fetched).
        FashionMnist,
        /// scikit-learn's digits (shipped): 1,797 images of 8×8, split 80/20 stratified by seed.
        Digits,
    }
}

/// A data set's training and test images: the sets and the indices of each part.
pub struct Split {
    pub train_set: ImageSet,
    pub train: Vec<usize>,
    pub test_set: ImageSet,
    pub test: Vec<usize>,
}

impl Dataset {
    /// The name as the command line and reports spell it.
    pub fn name(self) -> &'static str {
        match self {
            Dataset::FashionMnist => "fashion-mnist",
            Dataset::Digits => "digits",
        }
    }

    /// The training and test images; digits' split is stratified by `seed`.
    pub fn load(self, seed: u64) -> Result<Split, Error> {
        Ok(match self {
            Dataset::FashionMnist => {
                let (train, test) = frugal_formats::idx::read_fashion_mnist(
                    &frugal_formats::assets::fashion_mnist_dir(),
                )?;
                Split {
                    train: (0..train.len()).collect(),
                    test: (0..test.len()).collect(),
                    train_set: train,
                    test_set: test,
                }
            }
            Dataset::Digits => {
                let d = frugal_formats::digits::embedded_digits();
                let test = crate::stratified_split(&d.labels, d.n_classes, 0.2, seed);
                let mut is_test = vec![false; d.len()];
                test.iter().for_each(|&i| is_test[i] = true);
                let train = (0..d.len()).filter(|&i| !is_test[i]).collect();
                Split {
                    train_set: d.clone(),
                    train,
                    test_set: d,
                    test,
                }
            }
        })
    }

    /// The images `frugal measure` queries: Fashion-MNIST's test set, all of digits.
    pub fn workload_images(self) -> Result<ImageSet, Error> {
        Ok(match self {
            Dataset::FashionMnist => {
                frugal_formats::idx::read_fashion_mnist(
                    &frugal_formats::assets::fashion_mnist_dir(),
                )?
                .1
            }
            Dataset::Digits => frugal_formats::digits::embedded_digits(),
        })
    }
}

impl std::fmt::Display for Dataset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
