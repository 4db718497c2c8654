//! The glue every two-stage detector shares (mmdet `detectors/two_stage.py`): the FPN and RPN
//! built on a backbone with their strides checked, the targets checked against the batch, and
//! the RPN's training half (losses + training proposals).

use std::borrow::Cow;

use cellseg_backbones::{Backbone, Fpn, FpnConfig};
use cellseg_core::Instances;
use tch::{Device, Kind, Tensor, nn};

use crate::assign::roi_sampler::BatchTargets;
use crate::config::HeadsConfig;
use crate::heads::rpn::{ProposalConfig, RpnHead, RpnLosses};
use crate::{Error, Result};

/// The FPN under `p / "neck"` on `backbone`'s outputs and the RPN under `p / "rpn_head"` on the
/// FPN's channels.
///
/// # Errors
/// The FPN's errors, and [`check_strides`]'.
pub(crate) fn build_neck(
    p: &nn::Path,
    backbone: &dyn Backbone,
    neck: &FpnConfig,
    heads: &HeadsConfig,
) -> Result<(Fpn, RpnHead)> {
    let neck = Fpn::new(&(p / "neck"), neck, &backbone.out_shapes())?;
    let c = check_strides(&neck, heads)?;
    let mut rpn_cfg = heads.rpn.clone();
    rpn_cfg.in_channels = c;
    Ok((neck, RpnHead::new(&(p / "rpn_head"), &rpn_cfg)))
}

/// The FPN's channels, after checking that the anchor strides equal the FPN strides and that the
/// RoI strides are their prefix.
pub(crate) fn check_strides(neck: &Fpn, heads: &HeadsConfig) -> Result<i64> {
    let strides: Vec<u32> = neck.out_shapes().iter().map(|s| s.stride).collect();
    if strides != heads.rpn.anchors.strides {
        return Err(Error::Config {
            key: "heads.rpn.anchors.strides".into(),
            reason: format!(
                "must equal the FPN strides {strides:?}, got {:?}",
                heads.rpn.anchors.strides
            ),
        });
    }
    for (key, r) in [
        ("heads.bbox_head.roi.featmap_strides", &heads.bbox_head.roi),
        ("heads.mask_head.roi.featmap_strides", &heads.mask_head.roi),
    ] {
        if !strides.starts_with(&r.featmap_strides) {
            return Err(Error::Config {
                key: key.into(),
                reason: format!("must be a prefix of the FPN strides {strides:?}"),
            });
        }
    }
    Ok(neck.out_shapes()[0].channels)
}

/// The RPN's training half of a batch.
pub(crate) struct RpnTraining {
    /// `loss_rpn_cls`, `loss_rpn_bbox`.
    pub losses: RpnLosses,
    /// Detached training proposals `[N_b, 4]` of every image.
    pub proposals: Vec<Tensor>,
}

/// RPN losses and training proposals (`proposals` config) of `feats` against `targets`.
pub(crate) fn rpn_train(
    rpn: &RpnHead,
    feats: &[Tensor],
    targets: &BatchTargets<'_>,
    proposals: &ProposalConfig,
) -> RpnTraining {
    let out = rpn.forward(feats);
    let sizes = unpadded_sizes(targets.instances());
    let losses = rpn.losses(&out, &targets.boxes(), &sizes);
    let props = rpn.proposals(&out, &sizes, proposals);
    RpnTraining { losses, proposals: props.into_iter().map(|p| p.boxes.detach()).collect() }
}

/// Checks a normalised, padded image batch against the model before any tensor work: `[B, 3, H,
/// W]` with `B, H, W > 0`, of the weights' dtype `kind` (a floating one), on the model's
/// `device`.
///
/// # Errors
/// [`Error::Shape`] / [`Error::Input`] naming the shape, dtype and devices.
pub(crate) fn check_images(images: &Tensor, device: Device, kind: Kind) -> Result<()> {
    let shape = images.size();
    if !images.defined() || shape.len() != 4 || shape[1] != 3 || shape.iter().any(|&d| d <= 0) {
        return Err(Error::Shape {
            what: "images",
            expected: "[B, 3, H, W] with B, H, W > 0".into(),
            got: if images.defined() { shape } else { Vec::new() },
        });
    }
    if images.kind() != kind {
        return Err(Error::Input {
            what: "images",
            shape,
            got: format!("{:?}", images.kind()),
            expected: format!(
                "normalised images of the weights' dtype, {kind:?} (a floating dtype)"
            ),
        });
    }
    if images.device() != device {
        return Err(Error::Input {
            what: "images",
            shape,
            got: format!("on {:?}", images.device()),
            expected: format!("{device:?}"),
        });
    }
    Ok(())
}

/// Checks the unpadded `sizes` (`(h, w)`) of a batch: one per image, each inside the padded
/// canvas.
///
/// # Errors
/// [`Error::Mismatch`] for a count that differs, [`Error::Shape`] for a size beyond the canvas.
pub(crate) fn check_sizes(images: &Tensor, sizes: &[(i64, i64)], what: &'static str) -> Result<()> {
    let shape = images.size();
    let b = shape[0] as usize;
    if b != sizes.len() {
        return Err(Error::Mismatch { what, left: b, right: sizes.len() });
    }
    if let Some(&(h, w)) =
        sizes.iter().find(|&&(h, w)| h <= 0 || w <= 0 || h > shape[2] || w > shape[3])
    {
        return Err(Error::Shape {
            what,
            expected: format!(
                "(h, w) with 0 < h <= {} and 0 < w <= {} (the padded batch)",
                shape[2], shape[3]
            ),
            got: vec![h, w],
        });
    }
    Ok(())
}

/// `targets` checked against the batch (one per image, sizes inside the canvas, labels below
/// `num_classes`), without ground truths whose box has no area.
///
/// # Errors
/// [`Error::Mismatch`] when the batch size and the number of targets differ, [`Error::Shape`]
/// for an image size beyond the padded batch, [`Error::Config`] for a label the model lacks.
pub(crate) fn checked_targets<'a>(
    images: &Tensor,
    targets: &'a [Instances],
    num_classes: i64,
) -> Result<Cow<'a, [Instances]>> {
    check_sizes(images, &unpadded_sizes(targets), "images vs targets")?;
    if let Some((i, &label)) = targets
        .iter()
        .enumerate()
        .find_map(|(i, t)| t.labels.iter().find(|&&l| l as i64 >= num_classes).map(|l| (i, l)))
    {
        return Err(Error::Config {
            key: "num_classes".into(),
            reason: format!(
                "the target of image {i} has label {label}, but the model has {num_classes} classes"
            ),
        });
    }
    if targets.iter().all(|t| t.boxes.iter().all(|b| b.is_nonempty())) {
        return Ok(Cow::Borrowed(targets));
    }
    Ok(Cow::Owned(targets.iter().map(drop_empty_boxes).collect()))
}

/// `(h, w)` of every target's image.
pub(crate) fn unpadded_sizes(targets: &[Instances]) -> Vec<(i64, i64)> {
    targets.iter().map(|t| (t.image_size.height as i64, t.image_size.width as i64)).collect()
}

/// `inst` without the instances whose box has no area.
fn drop_empty_boxes(inst: &Instances) -> Instances {
    let keep: Vec<usize> = (0..inst.len()).filter(|&i| inst.boxes[i].is_nonempty()).collect();
    if keep.len() < inst.len() {
        tracing::debug!(
            dropped = inst.len() - keep.len(),
            "ground truths with an empty box ignored"
        );
    }
    inst.select(&keep)
}
