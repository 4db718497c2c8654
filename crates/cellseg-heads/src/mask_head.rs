//! `FCNMaskHead` (mmdet `fcn_mask_head.py`): `num_convs` × (3×3 conv + ReLU) →
//! `ConvTranspose2d(k=2, s=2)` → ReLU → 1×1 `conv_logits` with one channel per class (no background).
//!
//! # Checkpoint keys
//! `roi_head.mask_head.convs.{i}.conv.{weight,bias}`, `.upsample.{weight,bias}`,
//! `.conv_logits.{weight,bias}`. With [`ClassOrder::BackgroundFirst`], `conv_logits` has C+1
//! channels (torchvision) and channel 0 is dropped in [`MaskHead::forward`].

use tch::{Tensor, nn, nn::Module};

use crate::config::{ClassOrder, MaskHeadConfig};

/// Kaiming-normal (fan_out, ReLU) init, mmcv's `kaiming_init` default.
fn kaiming_out() -> nn::Init {
    nn::Init::Kaiming {
        dist: nn::init::NormalOrUniform::Normal,
        fan: nn::init::FanInOut::FanOut,
        non_linearity: nn::init::NonLinearity::ReLU,
    }
}

/// The mask head.
#[derive(Debug)]
pub struct MaskHead {
    convs: Vec<nn::Conv2D>,
    upsample: nn::ConvTranspose2D,
    conv_logits: nn::Conv2D,
    order: ClassOrder,
}

impl MaskHead {
    /// Builds the head under `p`.
    pub fn new(
        p: &nn::Path,
        cfg: &MaskHeadConfig,
        in_channels: i64,
        num_classes: i64,
        order: ClassOrder,
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
        Self { convs, upsample, conv_logits, order }
    }

    /// Mask logits `[R, C, 2P, 2P]` of RoI features `[R, C_in, P, P]`.
    pub fn forward(&self, roi_feats: &Tensor) -> Tensor {
        let mut x = roi_feats.shallow_clone();
        for c in &self.convs {
            x = c.forward(&x).relu();
        }
        let x = self.conv_logits.forward(&self.upsample.forward(&x).relu());
        match self.order {
            ClassOrder::BackgroundLast => x,
            ClassOrder::BackgroundFirst => {
                let k = x.size()[1];
                x.slice(1, 1, k, 1)
            }
        }
    }
}
