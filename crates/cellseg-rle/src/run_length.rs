//! The shared body of [`crate::KaggleRle`] and [`crate::DsbRle`]: the same `"start length …"`
//! syntax over two different pixel orders, as two distinct types.

/// Defines a `"start length …"` RLE type for one pixel order.
macro_rules! start_length_rle {
    ($(#[$doc:meta])* $name:ident, $order:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub struct $name {
            size: cellseg_core::ImageSize,
            runs: Vec<$crate::Run>,
        }

        impl $name {
            /// Parses a `"start length …"` string (1-based starts) for an image of `size`.
            ///
            /// Runs that touch are merged. An empty string is an empty mask.
            ///
            /// # Errors
            /// [`Error::Token`](crate::Error::Token) (non-numeric or negative token),
            /// [`Error::OddTokenCount`](crate::Error::OddTokenCount),
            /// [`Error::ZeroStart`](crate::Error::ZeroStart),
            /// [`Error::ZeroLength`](crate::Error::ZeroLength),
            /// [`Error::RunOutOfBounds`](crate::Error::RunOutOfBounds),
            /// [`Error::UnsortedRuns`](crate::Error::UnsortedRuns) (overlapping or unsorted), each
            /// naming the token or run; [`Error::ImageTooLarge`](crate::Error::ImageTooLarge).
            pub fn parse(s: &str, size: cellseg_core::ImageSize) -> $crate::Result<Self> {
                Ok(Self { size, runs: $crate::runs::parse(s, size)? })
            }

            /// The encoding of a full-image mask.
            pub fn from_mask(mask: &cellseg_core::BitMask) -> Self {
                Self { size: mask.size(), runs: $crate::runs::from_bitmask(mask, $order) }
            }

            /// The encoding of a cropped mask (only its rectangle is visited).
            pub fn from_cropped(mask: &cellseg_core::CroppedMask) -> Self {
                Self { size: mask.image_size(), runs: $crate::runs::from_cropped(mask, $order) }
            }

            /// The image size.
            pub fn size(&self) -> cellseg_core::ImageSize {
                self.size
            }

            /// The runs, sorted, disjoint and not touching, 0-based in this type's pixel order.
            pub fn runs(&self) -> &[$crate::Run] {
                &self.runs
            }

            /// Number of set pixels.
            pub fn area(&self) -> u64 {
                $crate::runs::area(&self.runs)
            }

            /// The full-image mask.
            pub fn to_mask(&self) -> cellseg_core::BitMask {
                $crate::runs::to_bitmask(&self.runs, self.size, $order)
            }

            /// The mask inside its tight bounding rectangle.
            pub fn to_cropped(&self) -> cellseg_core::CroppedMask {
                $crate::runs::to_cropped(&self.runs, self.size, $order)
            }

            /// Tight bounding box (continuous coordinates), `None` when empty.
            pub fn bbox(&self) -> Option<cellseg_core::BoxXyxy> {
                $crate::runs::bounds(&self.runs, self.size, $order).map(|(r0, c0, r1, c1)| {
                    cellseg_core::BoxXyxy::new(c0 as f32, r0 as f32, (c1 + 1) as f32, (r1 + 1) as f32)
                })
            }

            /// Number of pixels set in both masks, computed on the runs (no bitmap).
            ///
            /// # Errors
            /// [`Error::SizeMismatch`](crate::Error::SizeMismatch) when the images differ.
            pub fn intersection(&self, other: &Self) -> $crate::Result<u64> {
                if self.size != other.size {
                    return Err($crate::Error::SizeMismatch { index: 1, got: other.size, want: self.size });
                }
                Ok($crate::runs::intersection(&self.runs, &other.runs))
            }

            /// Intersection over union, computed on the runs (0 when both are empty).
            ///
            /// # Errors
            /// [`Error::SizeMismatch`](crate::Error::SizeMismatch) when the images differ.
            pub fn iou(&self, other: &Self) -> $crate::Result<f64> {
                let inter = self.intersection(other)?;
                let union = self.area() + other.area() - inter;
                Ok(if union == 0 { 0.0 } else { inter as f64 / union as f64 })
            }
        }

        impl std::fmt::Display for $name {
            /// The `"start length …"` string, 1-based starts.
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&$crate::runs::format(&self.runs))
            }
        }
    };
}

pub(crate) use start_length_rle;
