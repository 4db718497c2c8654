//! `Shared2FCBBoxHead` (mmdet `convfc_bbox_head.py`): flatten → fc → ReLU → fc → ReLU →
//! `fc_cls` (C+1, background last) and `fc_reg` (4C, class-specific).
//!
//! # Checkpoint keys
//! `roi_head.bbox_head.shared_fcs.{0,1}.{weight,bias}`, `.fc_cls.{weight,bias}`, `.fc_reg.{weight,bias}`.
//! With [`ClassOrder::BackgroundFirst`] the two last layers have torchvision's layout
//! (`C+1` rows with background first, `4(C+1)` regression rows) and [`BoxHead::forward`] converts
//! their outputs to the canonical layout.

use tch::{Tensor, nn, nn::Module};

use crate::config::{BoxHeadConfig, ClassOrder};

/// Xavier-uniform init for a `fan_in → fan_out` layer.
pub(crate) fn xavier(fan_in: i64, fan_out: i64) -> nn::Init {
    let b = (6.0 / (fan_in + fan_out) as f64).sqrt();
    nn::Init::Uniform { lo: -b, up: b }
}

/// Class scores and deltas in the canonical layout.
#[derive(Debug)]
pub struct BoxPredictions {
    /// `[R, C + 1]` logits, background last.
    pub cls: Tensor,
    /// `[R, 4C]` deltas, class c in columns `4c..4c+4`.
    pub reg: Tensor,
}

/// The box head.
#[derive(Debug)]
pub struct BoxHead {
    shared_fcs: Vec<nn::Linear>,
    fc_cls: nn::Linear,
    fc_reg: nn::Linear,
    order: ClassOrder,
}

impl BoxHead {
    /// Builds the head under `p` for `in_channels`-channel RoI features and `num_classes` classes.
    pub fn new(p: &nn::Path, cfg: &BoxHeadConfig, in_channels: i64, num_classes: i64) -> Self {
        let s = cfg.roi.output_size;
        let fin = in_channels * s * s;
        let fc = cfg.fc_channels;
        let sp = p / "shared_fcs";
        let lin = |path: nn::Path, i: i64, o: i64, w: nn::Init| {
            nn::linear(
                path,
                i,
                o,
                nn::LinearConfig { ws_init: w, bs_init: Some(nn::Init::Const(0.0)), bias: true },
            )
        };
        let shared_fcs =
            vec![lin(&sp / 0, fin, fc, xavier(fin, fc)), lin(&sp / 1, fc, fc, xavier(fc, fc))];
        let (nc, nr) = match cfg.class_order {
            ClassOrder::BackgroundLast => (num_classes + 1, 4 * num_classes),
            ClassOrder::BackgroundFirst => (num_classes + 1, 4 * (num_classes + 1)),
        };
        Self {
            shared_fcs,
            fc_cls: lin(p / "fc_cls", fc, nc, nn::Init::Randn { mean: 0.0, stdev: 0.01 }),
            fc_reg: lin(p / "fc_reg", fc, nr, nn::Init::Randn { mean: 0.0, stdev: 0.001 }),
            order: cfg.class_order,
        }
    }

    /// Scores and deltas of RoI features `[R, C_in, 7, 7]`.
    pub fn forward(&self, roi_feats: &Tensor) -> BoxPredictions {
        let mut x = roi_feats.flatten(1, -1);
        for fc in &self.shared_fcs {
            x = fc.forward(&x).relu();
        }
        let cls = self.fc_cls.forward(&x);
        let reg = self.fc_reg.forward(&x);
        match self.order {
            ClassOrder::BackgroundLast => BoxPredictions { cls, reg },
            ClassOrder::BackgroundFirst => {
                let k = cls.size()[1];
                BoxPredictions {
                    cls: Tensor::cat(&[cls.slice(1, 1, k, 1), cls.slice(1, 0, 1, 1)], 1),
                    reg: reg.slice(1, 4, 4 * k, 1),
                }
            }
        }
    }
}
