//! DSB2018 RLE: the `"start length …"` syntax of Kaggle, but pixels numbered **column-major**
//! (index = col · height + row + 1), as in the DSB2018 `stage1_solution.csv`.
//!
//! ```
//! use cellseg_core::{BitMask, ImageSize};
//! use cellseg_rle::dsb;
//!
//! let mut m = BitMask::zeros(ImageSize::new(2, 3));
//! m.set(1, 0, true);
//! m.set(0, 1, true);
//! assert_eq!(dsb::encode(&m), "2 2");
//! assert_eq!(dsb::decode("2 2", m.size())?, m);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use cellseg_core::{BitMask, CroppedMask, ImageSize};

use crate::Result;
use crate::run_length::start_length_rle;
use crate::runs::Order;

start_length_rle! {
    /// A DSB2018 RLE: column-major runs of one instance mask (see the module docs).
    DsbRle, Order::ColumnMajor
}

/// Encodes a full-image mask as a DSB (column-major) string.
pub fn encode(mask: &BitMask) -> String {
    DsbRle::from_mask(mask).to_string()
}

/// Encodes a cropped mask as a DSB (column-major) string.
pub fn encode_cropped(mask: &CroppedMask) -> String {
    DsbRle::from_cropped(mask).to_string()
}

/// Decodes a DSB (column-major) string into a full-image mask of `size`.
///
/// # Errors
/// See [`DsbRle::parse`].
pub fn decode(s: &str, size: ImageSize) -> Result<BitMask> {
    Ok(DsbRle::parse(s, size)?.to_mask())
}

/// Decodes a DSB (column-major) string into a cropped mask.
///
/// # Errors
/// See [`DsbRle::parse`].
pub fn decode_cropped(s: &str, size: ImageSize) -> Result<CroppedMask> {
    Ok(DsbRle::parse(s, size)?.to_cropped())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_major_differs_from_row_major() {
        let size = ImageSize::new(3, 4);
        let m = decode("2 2", size).unwrap();
        assert!(m.get(1, 0) && m.get(2, 0));
        let k = crate::kaggle::decode("2 2", size).unwrap();
        assert!(k.get(0, 1) && k.get(0, 2));
    }

    #[test]
    fn runs_wrapping_columns_round_trip() {
        let size = ImageSize::new(3, 4);
        let m = decode("2 5 11 2", size).unwrap();
        assert_eq!(m.area(), 7);
        assert_eq!(encode(&m), "2 5 11 2");
        assert_eq!(encode_cropped(&m.to_cropped()), "2 5 11 2");
        assert_eq!(decode_cropped("2 5 11 2", size).unwrap().to_full(), m);
    }
}
