//! Kaggle / Sartorius RLE: `"start length …"`, starts 1-based, pixels numbered row-major
//! (index = row · width + col + 1), as in the competition's `train.csv` and submissions.
//!
//! ```
//! use cellseg_core::{BitMask, ImageSize};
//! use cellseg_rle::kaggle;
//!
//! let mut m = BitMask::zeros(ImageSize::new(2, 3));
//! m.set(0, 1, true);
//! m.set(0, 2, true);
//! m.set(1, 0, true);
//! assert_eq!(kaggle::encode(&m), "2 3");
//! assert_eq!(kaggle::decode("2 3", m.size())?, m);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use cellseg_core::{BitMask, CroppedMask, ImageSize};

use crate::Result;
use crate::run_length::start_length_rle;
use crate::runs::Order;

start_length_rle! {
    /// A Kaggle RLE: row-major runs of one instance mask (see the module docs).
    ///
    /// Its `Display` is the competition string.
    KaggleRle, Order::RowMajor
}

/// Encodes a full-image mask as a Kaggle string.
pub fn encode(mask: &BitMask) -> String {
    KaggleRle::from_mask(mask).to_string()
}

/// Encodes a cropped mask as a Kaggle string (only the rectangle is visited).
pub fn encode_cropped(mask: &CroppedMask) -> String {
    KaggleRle::from_cropped(mask).to_string()
}

/// Decodes a Kaggle string into a full-image mask of `size`.
///
/// # Errors
/// See [`KaggleRle::parse`].
pub fn decode(s: &str, size: ImageSize) -> Result<BitMask> {
    Ok(KaggleRle::parse(s, size)?.to_mask())
}

/// Decodes a Kaggle string into a cropped mask of an image of `size`.
///
/// # Errors
/// See [`KaggleRle::parse`].
pub fn decode_cropped(s: &str, size: ImageSize) -> Result<CroppedMask> {
    Ok(KaggleRle::parse(s, size)?.to_cropped())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;

    const SIZE: ImageSize = ImageSize::new(4, 5);

    #[test]
    fn starts_are_one_based_and_row_major() {
        let m = decode("1 2 6 1", SIZE).unwrap();
        assert!(m.get(0, 0) && m.get(0, 1) && m.get(1, 0));
        assert_eq!(m.area(), 3);
    }

    #[test]
    fn decode_rejects_bad_input_with_position() {
        type Check = fn(&Error) -> bool;
        let cases: &[(&str, Check)] = &[
            ("1 2 3", |e| matches!(e, Error::OddTokenCount { count: 3 })),
            ("1 x", |e| matches!(e, Error::Token { index: 1, .. })),
            ("1 -2", |e| matches!(e, Error::Token { index: 1, .. })),
            ("0 2", |e| matches!(e, Error::ZeroStart { run: 0 })),
            ("1 2 5 0", |e| matches!(e, Error::ZeroLength { run: 1, .. })),
            ("19 3", |e| matches!(e, Error::RunOutOfBounds { run: 0, end: 21, .. })),
            ("5 2 1 2", |e| matches!(e, Error::UnsortedRuns { run: 1, .. })),
            ("1 4 3 2", |e| matches!(e, Error::UnsortedRuns { run: 1, .. })),
            ("1 99999999999999999999999", |e| matches!(e, Error::Token { index: 1, .. })),
        ];
        for (s, ok) in cases {
            let e = decode(s, SIZE).unwrap_err();
            assert!(ok(&e), "{s:?} gave {e}");
        }
    }

    #[test]
    fn encode_of_cropped_equals_encode_of_full() {
        let m = decode("3 4 9 2 20 1", SIZE).unwrap();
        assert_eq!(encode(&m), "3 4 9 2 20 1");
        assert_eq!(encode_cropped(&m.to_cropped()), "3 4 9 2 20 1");
        assert_eq!(decode_cropped("3 4 9 2 20 1", SIZE).unwrap().to_full(), m);
    }
}
