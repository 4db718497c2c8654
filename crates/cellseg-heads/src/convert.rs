//! Conversions between tensors and the pure vocabulary of `cellseg-core`.

use cellseg_core::{BoxXyxy, ImageSize};
use cellseg_postproc::{SoftDetections, SoftMask};
use tch::{Device, Kind, Tensor};

use crate::Result;
use crate::ops::paste::PastedWindow;
use crate::roi_heads::RawDetections;

/// Boxes `[N, 4]` as [`BoxXyxy`].
pub fn tensor_to_boxes(t: &Tensor) -> Vec<BoxXyxy> {
    let v = Vec::<f32>::try_from(t.to_kind(Kind::Float).to_device(Device::Cpu).reshape([-1]))
        .expect("a float32 tensor converts to Vec<f32>");
    v.chunks(4).map(|c| BoxXyxy::new(c[0], c[1], c[2], c[3])).collect()
}

/// Scores `[K]` and labels `[K]` of raw detections on the host.
fn scores_and_labels(raw: &RawDetections) -> (Vec<f32>, Vec<usize>) {
    let scores = Vec::<f32>::try_from(raw.scores.to_kind(Kind::Float).to_device(Device::Cpu))
        .expect("a float32 tensor converts to Vec<f32>");
    let labels = Vec::<i64>::try_from(raw.labels.to_kind(Kind::Int64).to_device(Device::Cpu))
        .expect("an int64 tensor converts to Vec<i64>")
        .into_iter()
        .map(|l| l.max(0) as usize)
        .collect();
    (scores, labels)
}

/// [`SoftDetections`] from raw detections and their pasted soft windows (one per detection, from
/// [`crate::ops::paste::paste_soft`]), stored as the seed does: `floor(prob · 255)`.
///
/// # Errors
/// When a window leaves the image (ruled out by the paste) or the arrays disagree.
pub fn to_soft_detections(
    raw: &RawDetections,
    pasted: Vec<PastedWindow>,
    size: ImageSize,
) -> Result<SoftDetections> {
    let boxes = tensor_to_boxes(&raw.boxes);
    let (scores, labels) = scores_and_labels(raw);
    let masks = pasted
        .into_iter()
        .map(|((t, l, h, w), v)| SoftMask::from_probabilities(size, t, l, h, w, &v))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let out = SoftDetections { image_size: size, boxes, scores, labels, masks };
    out.validate()?;
    Ok(out)
}
