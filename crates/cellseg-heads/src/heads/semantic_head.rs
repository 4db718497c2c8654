//! HTC's `FusedSemanticHead` (mmdet `mask_heads/fused_semantic_head.py`): every FPN level goes
//! through a 1×1 conv + ReLU (`lateral_convs`) and is resized bilinearly (`align_corners=True`) to
//! the fusion level and summed; then `num_convs` × (3×3 conv + ReLU), a 1×1 `conv_logits` (the
//! per-pixel class logits) and a 1×1 conv + ReLU `conv_embedding` (the `semantic_feat` that HTC adds
//! to the box and mask RoI features).
//!
//! Its target is built from the instance masks ([`semantic_targets`]): the seed's
//! `gt_semantic_seg`, a binary foreground map (the union of the instances), 255 (ignored) in the
//! padding, subsampled to the fusion level as `SegRescale(1/stride)` (nearest) does. The loss is
//! mmdet 2.17's `CrossEntropyLoss(ignore_index=255)` times 0.2, averaged over **all** pixels of
//! the map, the ignored ones included (`reduction='none'` then `mean`).
//!
//! # Checkpoint keys
//! `roi_head.semantic_head.lateral_convs.{l}.conv.{weight,bias}`, `.convs.{i}.conv.*`,
//! `.conv_embedding.conv.*`, `.conv_logits.{weight,bias}`.

use cellseg_core::Instances;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor, nn, nn::Module};

use crate::heads::mask_head::kaiming_out;
use crate::ops::roi_align::RoiAlignConfig;

/// Semantic head settings (seed `config_htc.py`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SemanticHeadConfig {
    /// The FPN level the others are fused into (seed 1: stride 4 with the stride-1 stem).
    pub fusion_level: usize,
    /// Number of 3×3 convs (4).
    pub num_convs: usize,
    /// Channels of the convs and of `semantic_feat` (256; must equal the FPN's channels, since
    /// `semantic_feat` is added to the RoI features).
    pub conv_channels: i64,
    /// Output classes of `conv_logits` (seed 8; the target is binary, so only 0 and 1 are
    /// supervised; mmdet's default 183 is COCO-stuff).
    pub num_classes: i64,
    /// Loss weight (0.2).
    pub loss_weight: f64,
    /// Target value ignored by the loss (255, the padding).
    pub ignore_index: i64,
    /// RoI extractor of `semantic_feat` (RoIAlign 14 on the fusion level's stride, seed `[4]`;
    /// pooled to 7×7 for the box branch).
    pub roi: RoiAlignConfig,
}

impl Default for SemanticHeadConfig {
    fn default() -> Self {
        Self {
            fusion_level: 1,
            num_convs: 4,
            conv_channels: 256,
            num_classes: 8,
            loss_weight: 0.2,
            ignore_index: 255,
            roi: RoiAlignConfig {
                output_size: 14,
                featmap_strides: vec![4],
                ..RoiAlignConfig::default()
            },
        }
    }
}

/// mmcv `ConvModule` init (Kaiming normal, fan_out, ReLU; bias 0).
fn conv(p: nn::Path, i: i64, o: i64, k: i64) -> nn::Conv2D {
    nn::conv2d(
        p,
        i,
        o,
        k,
        nn::ConvConfig {
            padding: k / 2,
            ws_init: kaiming_out(),
            bs_init: nn::Init::Const(0.0),
            ..Default::default()
        },
    )
}

/// The fused semantic head.
#[derive(Debug)]
pub struct FusedSemanticHead {
    lateral_convs: Vec<nn::Conv2D>,
    convs: Vec<nn::Conv2D>,
    conv_embedding: nn::Conv2D,
    conv_logits: nn::Conv2D,
    cfg: SemanticHeadConfig,
}

/// The outputs of [`FusedSemanticHead::forward`].
#[derive(Debug)]
pub struct SemanticOutput {
    /// `[B, num_classes, H_f, W_f]` per-pixel logits on the fusion level.
    pub logits: Tensor,
    /// `[B, conv_channels, H_f, W_f]` `semantic_feat`.
    pub features: Tensor,
}

impl FusedSemanticHead {
    /// Builds the head under `p` (`roi_head.semantic_head`) for `num_levels` FPN levels of
    /// `in_channels` channels.
    pub fn new(
        p: &nn::Path,
        cfg: &SemanticHeadConfig,
        num_levels: usize,
        in_channels: i64,
    ) -> Self {
        let lp = p / "lateral_convs";
        let cp = p / "convs";
        let cc = cfg.conv_channels;
        Self {
            lateral_convs: (0..num_levels)
                .map(|l| conv(&lp / l / "conv", in_channels, in_channels, 1))
                .collect(),
            convs: (0..cfg.num_convs)
                .map(|i| conv(&cp / i / "conv", if i == 0 { in_channels } else { cc }, cc, 3))
                .collect(),
            conv_embedding: conv(p / "conv_embedding" / "conv", cc, cc, 1),
            conv_logits: conv(p / "conv_logits", cc, cfg.num_classes, 1),
            cfg: cfg.clone(),
        }
    }

    /// The head's settings.
    pub fn config(&self) -> &SemanticHeadConfig {
        &self.cfg
    }

    /// Logits and `semantic_feat` of the FPN levels (high → low resolution).
    pub fn forward(&self, levels: &[Tensor]) -> SemanticOutput {
        let f = self.cfg.fusion_level;
        let mut x = self.lateral_convs[f].forward(&levels[f]).relu();
        let size = [x.size()[2], x.size()[3]];
        for (l, feat) in levels.iter().enumerate() {
            if l != f {
                let r = feat.upsample_bilinear2d(size, true, None, None);
                // (Not `+=`: in place would overwrite the ReLU output its backward needs.)
                x = self.lateral_convs[l].forward(&r).relu() + x;
            }
        }
        for c in &self.convs {
            x = c.forward(&x).relu();
        }
        SemanticOutput {
            logits: self.conv_logits.forward(&x),
            features: self.conv_embedding.forward(&x).relu(),
        }
    }

    /// `loss_semantic_seg` of `logits` `[B, K, H, W]` against `targets` `[B, H, W]` (int64, see
    /// [`semantic_targets`]): per-pixel softmax CE, ignored pixels 0, mean over all `B·H·W`
    /// pixels, times `loss_weight`.
    pub fn loss(&self, logits: &Tensor, targets: &Tensor) -> Tensor {
        let per_pixel = logits.cross_entropy_loss::<Tensor>(
            targets,
            None,
            tch::Reduction::None,
            self.cfg.ignore_index,
            0.0,
        );
        per_pixel.mean(Kind::Float) * self.cfg.loss_weight
    }
}

/// The semantic targets `[B, H/s, W/s]` (int64 on `device`) of a batch padded to `canvas`
/// `(H, W)`, on the grid of stride `s`: 1 where any instance mask of the image is set, 0
/// elsewhere in the unpadded image, `ignore` in the padding; the pixel `(y·s, x·s)` of each
/// `s × s` block (OpenCV's nearest resize by `1/s`, the seed's `SegRescale`).
///
/// Instances with an empty mask add nothing (after a crop whose clipped box survived, as in
/// the seed); training data that has no masks at all is refused before training, by
/// `cellseg_train::detector::Detector::check_training_data`.
pub fn semantic_targets(
    targets: &[Instances],
    canvas: (i64, i64),
    stride: i64,
    ignore: i64,
    device: Device,
) -> Tensor {
    let s = stride.max(1) as usize;
    let (hc, wc) = (canvas.0.max(0) as usize, canvas.1.max(0) as usize);
    let (hs, ws) = (hc.div_ceil(s), wc.div_ceil(s));
    let mut out = vec![0u8; targets.len() * hs * ws];
    for (b, inst) in targets.iter().enumerate() {
        let map = &mut out[b * hs * ws..(b + 1) * hs * ws];
        let (h, w) = (inst.image_size.height, inst.image_size.width);
        for y in 0..hs {
            for x in 0..ws {
                if y * s >= h || x * s >= w {
                    map[y * ws + x] = ignore as u8;
                }
            }
        }
        for m in &inst.masks {
            let (top, left, mh, mw) = m.rect();
            let data = m.as_slice();
            for y in top.div_ceil(s)..(top + mh).div_ceil(s).min(hs) {
                for x in left.div_ceil(s)..(left + mw).div_ceil(s).min(ws) {
                    let (yy, xx) = (y * s, x * s);
                    if yy < h && xx < w && data[(yy - top) * mw + (xx - left)] != 0 {
                        map[y * ws + x] = 1;
                    }
                }
            }
        }
    }
    let host = Tensor::from_slice(&out)
        .view([targets.len() as i64, hs as i64, ws as i64])
        .to_kind(Kind::Int64);
    crate::transfers::upload(&host, device)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cellseg_core::{BitMask, BoxXyxy, ImageSize};

    fn one_cell(
        size: ImageSize,
        rows: std::ops::Range<usize>,
        cols: std::ops::Range<usize>,
    ) -> Instances {
        let mut m = BitMask::zeros(size);
        for r in rows.clone() {
            for c in cols.clone() {
                m.set(r, c, true);
            }
        }
        let b =
            BoxXyxy::new(cols.start as f32, rows.start as f32, cols.end as f32, rows.end as f32);
        Instances::new(size, vec![b], vec![0], vec![m.to_cropped()]).unwrap()
    }

    #[test]
    fn targets_subsample_the_union_and_ignore_the_padding() {
        // A 10x7 image padded to 12x8, stride 2: grid rows 0,2,..,10 and cols 0,2,4,6.
        let inst = one_cell(ImageSize::new(10, 7), 3..7, 1..5);
        let t = semantic_targets(&[inst], (12, 8), 2, 255, Device::Cpu);
        assert_eq!(t.size(), [1, 6, 4]);
        let v = Vec::<i64>::try_from(t.view([-1])).unwrap();
        #[rustfmt::skip]
        let want = [
            0, 0, 0, 0,
            0, 0, 0, 0,   // row 2: outside the cell (rows 3..7)
            0, 1, 1, 0,   // row 4: cols 2, 4 inside (1..5)
            0, 1, 1, 0,   // row 6
            0, 0, 0, 0,   // row 8
            255, 255, 255, 255, // row 10 >= h
        ];
        assert_eq!(v, want);
    }
}
