//! `FCNMaskHead` (mmdet `fcn_mask_head.py`): `num_convs` × (3×3 conv + ReLU) →
//! `ConvTranspose2d(k=2, s=2)` → ReLU → 1×1 `conv_logits` with one channel per class (no background).
//!
//! [`MaskHead::forward_with_features`] also returns the output of the convs before the upsampling
//! (mmdet's `res_feat`). Built `with_conv_res` it is HTC's `HTCMaskHead`: the previous stage's
//! `res_feat` goes through a 1×1 conv + ReLU (`conv_res`) and is added to the RoI features
//! before the convs ([`MaskHead::forward_flow`], the mask information flow).
//!
//! # Checkpoint keys
//! `<path>.convs.{i}.conv.{weight,bias}`, `.upsample.{weight,bias}`, `.conv_logits.{weight,bias}`
//! and, with `conv_res`, `.conv_res.conv.{weight,bias}`, where `<path>` is `roi_head.mask_head`
//! (Mask R-CNN) or `roi_head.mask_head.{i}` (stage i). With [`ClassOrder::BackgroundFirst`],
//! `conv_logits` has C+1 channels (torchvision) and channel 0 is dropped in [`MaskHead::forward`].

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor, nn, nn::Module};

use crate::heads::box_head::ClassOrder;
use crate::ops::roi_align::RoiAlignConfig;

/// Mask head (FCN) settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MaskHeadConfig {
    /// RoI extractor (14×14).
    pub roi: RoiAlignConfig,
    /// Number of 3×3 convs.
    pub num_convs: usize,
    /// Channels of the convs.
    pub conv_channels: i64,
    /// Side of the mask targets (28).
    pub mask_size: i64,
    /// Binarise the mask targets at 0.5 (mmdet: true; torchvision: false).
    pub binarize_targets: bool,
    /// Align the RoIAlign of the mask targets (mmdet: true; torchvision: false).
    pub aligned_targets: bool,
}

impl Default for MaskHeadConfig {
    fn default() -> Self {
        Self {
            roi: RoiAlignConfig { output_size: 14, ..RoiAlignConfig::default() },
            num_convs: 4,
            conv_channels: 256,
            mask_size: 28,
            binarize_targets: true,
            aligned_targets: true,
        }
    }
}

/// Kaiming-normal (fan_out, ReLU) init, mmcv's `kaiming_init` default.
pub(crate) fn kaiming_out() -> nn::Init {
    nn::Init::Kaiming {
        dist: nn::init::NormalOrUniform::Normal,
        fan: nn::init::FanInOut::FanOut,
        non_linearity: nn::init::NonLinearity::ReLU,
    }
}

/// The mask head.
#[derive(Debug)]
pub struct MaskHead {
    conv_res: Option<nn::Conv2D>,
    convs: Vec<nn::Conv2D>,
    upsample: nn::ConvTranspose2D,
    conv_logits: nn::Conv2D,
    order: ClassOrder,
}

impl MaskHead {
    /// Builds the head under `p`; `with_conv_res` adds HTC's `conv_res` (the stages after the
    /// first of an HTC with mask information flow).
    pub fn new(
        p: &nn::Path,
        cfg: &MaskHeadConfig,
        in_channels: i64,
        num_classes: i64,
        order: ClassOrder,
        with_conv_res: bool,
    ) -> Self {
        let cc = cfg.conv_channels;
        let conv_cfg = |pad| nn::ConvConfig {
            padding: pad,
            ws_init: kaiming_out(),
            bs_init: nn::Init::Const(0.0),
            ..Default::default()
        };
        let cp = p / "convs";
        let convs = (0..cfg.num_convs)
            .map(|i| {
                let cin = if i == 0 { in_channels } else { cc };
                nn::conv2d(&cp / i / "conv", cin, cc, 3, conv_cfg(1))
            })
            .collect::<Vec<_>>();
        let up_in = if cfg.num_convs == 0 { in_channels } else { cc };
        let upsample = nn::conv_transpose2d(
            p / "upsample",
            up_in,
            cc,
            2,
            nn::ConvTransposeConfig {
                stride: 2,
                ws_init: kaiming_out(),
                bs_init: nn::Init::Const(0.0),
                ..Default::default()
            },
        );
        let out = match order {
            ClassOrder::BackgroundLast => num_classes,
            ClassOrder::BackgroundFirst => num_classes + 1,
        };
        let conv_logits = nn::conv2d(p / "conv_logits", cc, out, 1, conv_cfg(0));
        let conv_res =
            with_conv_res.then(|| nn::conv2d(p / "conv_res" / "conv", cc, cc, 1, conv_cfg(0)));
        Self { conv_res, convs, upsample, conv_logits, order }
    }

    /// Whether the head takes the previous stage's features (`conv_res`).
    pub fn has_conv_res(&self) -> bool {
        self.conv_res.is_some()
    }

    /// Mask logits `[R, C, 2P, 2P]` of RoI features `[R, C_in, P, P]`.
    pub fn forward(&self, roi_feats: &Tensor) -> Tensor {
        self.forward_with_features(roi_feats).logits
    }

    /// Mask logits and the pre-upsample features of RoI features `[R, C_in, P, P]`.
    pub fn forward_with_features(&self, roi_feats: &Tensor) -> MaskOutput {
        self.forward_flow(roi_feats, None)
    }

    /// The output of the convs `[R, conv_channels, P, P]` (mmdet `res_feat`) of RoI features
    /// `[R, C_in, P, P]` plus, when given, `conv_res` of the previous stage's `last` features
    /// (HTC `return_logits=False`: no upsampling).
    ///
    /// # Panics
    /// When `last` is given to a head without `conv_res`.
    pub fn conv_features(&self, roi_feats: &Tensor, last: Option<&Tensor>) -> Tensor {
        let mut x = match last {
            Some(last) => {
                let conv_res = self.conv_res.as_ref().expect("a head fed `last` has conv_res");
                roi_feats + conv_res.forward(last).relu()
            }
            None => roi_feats.shallow_clone(),
        };
        for c in &self.convs {
            x = c.forward(&x).relu();
        }
        x
    }

    /// Mask logits and features of RoI features `[R, C_in, P, P]` with the previous stage's
    /// features `last` (HTC's mask information flow; `None` for the first stage).
    ///
    /// # Panics
    /// When `last` is given to a head without `conv_res`.
    pub fn forward_flow(&self, roi_feats: &Tensor, last: Option<&Tensor>) -> MaskOutput {
        let x = self.conv_features(roi_feats, last);
        let logits = self.conv_logits.forward(&self.upsample.forward(&x).relu());
        let logits = match self.order {
            ClassOrder::BackgroundLast => logits,
            ClassOrder::BackgroundFirst => {
                let k = logits.size()[1];
                logits.slice(1, 1, k, 1)
            }
        };
        MaskOutput { logits, features: x }
    }

    /// mmdet `mask_cross_entropy`: the channel of each row's label `labels` `[P]` of `logits`
    /// `[P, C, M, M]` against binary `targets` `[P, M, M]`, mean over `P·M·M`; a zero that keeps
    /// `logits` in the graph when there are no rows.
    pub fn loss(logits: &Tensor, labels: &Tensor, targets: &Tensor) -> Tensor {
        if logits.size()[0] == 0 {
            return logits.sum(Kind::Float) * 0.0;
        }
        select_class(logits, labels).binary_cross_entropy_with_logits::<Tensor>(
            targets,
            None,
            None,
            tch::Reduction::Mean,
        )
    }
}

/// The outputs of [`MaskHead::forward_with_features`].
#[derive(Debug)]
pub struct MaskOutput {
    /// `[R, C, 2P, 2P]` logits.
    pub logits: Tensor,
    /// `[R, conv_channels, P, P]` output of the convs (before the upsampling).
    pub features: Tensor,
}

/// The channel `labels[r]` of each row of `maps` `[R, C, M, M]`: `[R, M, M]`.
pub fn select_class(maps: &Tensor, labels: &Tensor) -> Tensor {
    let m = maps.size()[2];
    let idx = labels.view([-1, 1, 1, 1]).expand([-1, 1, m, m], false);
    maps.gather(1, &idx, false).squeeze_dim(1)
}
