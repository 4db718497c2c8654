//! Conversions between tensors and the pure vocabulary of `cellseg-core`.

use cellseg_core::{BoxXyxy, Detections, ImageSize, Instances};
use tch::{Device, Kind, Tensor};

use crate::Result;
use crate::paste::paste_masks;
use crate::roi_heads::RawDetections;

/// GT boxes `[G, 4]` (float32) and labels `[G]` (int64) of `inst` on `device`.
pub fn instances_to_tensors(inst: &Instances, device: Device) -> (Tensor, Tensor) {
    let b: Vec<f32> = inst.boxes.iter().flat_map(|b| [b.x1, b.y1, b.x2, b.y2]).collect();
    let l: Vec<i64> = inst.labels.iter().map(|&l| l as i64).collect();
    (
        Tensor::from_slice(&b).view([-1, 4]).to_device(device),
        Tensor::from_slice(&l).to_kind(Kind::Int64).to_device(device),
    )
}

/// Boxes `[N, 4]` as [`BoxXyxy`].
pub fn tensor_to_boxes(t: &Tensor) -> Vec<BoxXyxy> {
    let v = Vec::<f32>::try_from(t.to_kind(Kind::Float).to_device(Device::Cpu).reshape([-1]))
        .unwrap_or_default();
    v.chunks(4).map(|c| BoxXyxy::new(c[0], c[1], c[2], c[3])).collect()
}

/// Pure [`Detections`] from raw detections and their mask probabilities `[K, M, M]` (or `None`
/// for boxes only), pasted and binarised at `mask_thr`.
///
/// # Errors
/// When the core types reject the arrays (lengths, mask sizes).
pub fn to_detections(
    raw: &RawDetections,
    probs: Option<&Tensor>,
    size: ImageSize,
    mask_thr: f32,
) -> Result<Detections> {
    let boxes = tensor_to_boxes(&raw.boxes);
    let scores = Vec::<f32>::try_from(raw.scores.to_kind(Kind::Float).to_device(Device::Cpu))
        .unwrap_or_default();
    let labels: Vec<usize> = Vec::<i64>::try_from(raw.labels.to_device(Device::Cpu))
        .unwrap_or_default()
        .into_iter()
        .map(|l| l.max(0) as usize)
        .collect();
    let masks = match probs {
        Some(p) if !boxes.is_empty() => paste_masks(p, &raw.boxes, size, mask_thr)?,
        _ => Vec::new(),
    };
    Ok(Detections::new(size, boxes, scores, labels, masks)?)
}
