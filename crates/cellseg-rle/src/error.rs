//! The error type of `cellseg-rle`.

use cellseg_core::ImageSize;

/// Errors of `cellseg-rle`. Every parse error names the position (token, run, byte or polygon) at
/// which the input went wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An error of the shared vocabulary (sizes, lengths, configs).
    #[error(transparent)]
    Core(#[from] cellseg_core::Error),
    /// A token of a `"start length …"` string is not a non-negative integer.
    #[error("RLE token {index} is not a non-negative integer: {token:?}")]
    Token {
        /// 0-based position of the token among the whitespace-separated tokens.
        index: usize,
        /// The offending token (truncated to 32 characters).
        token: String,
    },
    /// A `"start length …"` string has an odd number of values.
    #[error("RLE has an odd number of values ({count}): every start needs a length")]
    OddTokenCount {
        /// Number of tokens.
        count: usize,
    },
    /// A 1-based start is 0.
    #[error("run {run}: start 0, but starts are 1-based")]
    ZeroStart {
        /// 0-based index of the run.
        run: usize,
    },
    /// A run has length 0.
    #[error("run {run} (start {start}) has length 0")]
    ZeroLength {
        /// 0-based index of the run.
        run: usize,
        /// Its 1-based start.
        start: u64,
    },
    /// A run extends past the last pixel of the image.
    #[error("run {run} ends at pixel {end}, beyond a {height}x{width} image ({} pixels)", height * width)]
    RunOutOfBounds {
        /// 0-based index of the run.
        run: usize,
        /// 1-based index of its last pixel.
        end: u64,
        /// Image height.
        height: usize,
        /// Image width.
        width: usize,
    },
    /// A run starts before the previous one ended (unsorted or overlapping runs).
    #[error(
        "run {run} starts at pixel {start}, before the previous run ends at pixel {previous_end} (runs must be sorted and disjoint)"
    )]
    UnsortedRuns {
        /// 0-based index of the run.
        run: usize,
        /// Its 1-based start.
        start: u64,
        /// 1-based last pixel of the previous run.
        previous_end: u64,
    },
    /// A character of a compressed COCO `counts` string is outside `'0'..='o'`.
    #[error("compressed counts: byte {position} is {byte:#04x}, outside the alphabet 0x30..=0x6f")]
    CountsByte {
        /// 0-based byte offset.
        position: usize,
        /// The byte.
        byte: u8,
    },
    /// A compressed COCO `counts` string ends inside a value.
    #[error("compressed counts: the string ends inside the value that starts at byte {position}")]
    CountsTruncated {
        /// Byte offset where the unfinished value starts.
        position: usize,
    },
    /// A value of a compressed COCO `counts` string uses more than 7 characters.
    #[error("compressed counts: the value at byte {position} is longer than 7 characters")]
    CountsTooLong {
        /// Byte offset where the value starts.
        position: usize,
    },
    /// A COCO count is negative or does not fit in 32 bits.
    #[error("COCO count {index} is {value}, outside 0..=4294967295")]
    CountOutOfRange {
        /// 0-based index of the count.
        index: usize,
        /// The decoded value.
        value: i64,
    },
    /// COCO counts do not add up to the number of pixels.
    #[error("COCO counts add up to {sum}, but a {height}x{width} image has {} pixels", height * width)]
    CountsSum {
        /// Sum of the counts.
        sum: u64,
        /// Image height.
        height: usize,
        /// Image width.
        width: usize,
    },
    /// A polygon has fewer than 3 points or an odd number of coordinates.
    #[error(
        "polygon {polygon} has {coords} coordinates; it needs an even number, at least 6 (3 points)"
    )]
    PolygonTooShort {
        /// 0-based index of the polygon.
        polygon: usize,
        /// Number of coordinates.
        coords: usize,
    },
    /// A polygon coordinate is NaN or infinite.
    #[error("polygon {polygon}: coordinate {index} is not finite ({value})")]
    PolygonCoordinate {
        /// 0-based index of the polygon.
        polygon: usize,
        /// 0-based index of the coordinate.
        index: usize,
        /// The value.
        value: f64,
    },
    /// A polygon vertex lies more than one image size outside the image (see
    /// [`crate::CocoRle::from_polygon`]).
    #[error(
        "polygon {polygon}: coordinate {index} = {value} lies more than one image size outside \
         the {height}x{width} image"
    )]
    PolygonFarOutside {
        /// 0-based index of the polygon.
        polygon: usize,
        /// 0-based index of the coordinate (even: x, odd: y).
        index: usize,
        /// The value.
        value: f64,
        /// Image height.
        height: usize,
        /// Image width.
        width: usize,
    },
    /// Masks of different image sizes were combined.
    #[error("mask {index} is {}x{}, but the first mask is {}x{}", got.height, got.width, want.height, want.width)]
    SizeMismatch {
        /// 0-based index of the mask in its list.
        index: usize,
        /// Its size.
        got: ImageSize,
        /// The expected size.
        want: ImageSize,
    },
    /// A list that must not be empty is empty (`merge` of nothing).
    #[error("{what}: empty input")]
    Empty {
        /// What needed a non-empty list.
        what: &'static str,
    },
    /// Parallel lists have different lengths (for example `gt` and `iscrowd`).
    #[error("{what}: {left} entries but {right} flags")]
    LengthMismatch {
        /// What was being computed.
        what: &'static str,
        /// First length.
        left: usize,
        /// Second length.
        right: usize,
    },
    /// The image has more than `u32::MAX` pixels (COCO counts are 32-bit).
    #[error("a {height}x{width} image is too large for 32-bit run lengths")]
    ImageTooLarge {
        /// Image height.
        height: usize,
        /// Image width.
        width: usize,
    },
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
