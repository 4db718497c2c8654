//! The glue every two-stage detector shares (mmdet `detectors/two_stage.py`): the FPN and RPN
//! built on a backbone with their strides checked, the targets checked against the batch, and
//! the RPN's training half (losses + training proposals).

use std::borrow::Cow;

use cellseg_backbones::{Backbone, Fpn, FpnConfig};
use cellseg_core::Instances;
use tch::{Tensor, nn};

use crate::config::HeadsConfig;
use crate::convert::instances_to_tensors;
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
    targets: &[Instances],
    proposals: &ProposalConfig,
) -> RpnTraining {
    let dev = feats[0].device();
    let out = rpn.forward(feats);
    let gts: Vec<Tensor> = targets.iter().map(|t| instances_to_tensors(t, dev).0).collect();
    let sizes = unpadded_sizes(targets);
    let losses = rpn.losses(&out, &gts, &sizes);
    let props = rpn.proposals(&out, &sizes, proposals);
    RpnTraining { losses, proposals: props.into_iter().map(|p| p.boxes.detach()).collect() }
}

/// `targets` checked against the batch, without ground truths whose box has no area.
///
/// # Errors
/// [`Error::Mismatch`] when the batch size and the number of targets differ.
pub(crate) fn checked_targets<'a>(
    images: &Tensor,
    targets: &'a [Instances],
) -> Result<Cow<'a, [Instances]>> {
    let b = images.size()[0] as usize;
    if b != targets.len() {
        return Err(Error::Mismatch { what: "images vs targets", left: b, right: targets.len() });
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
