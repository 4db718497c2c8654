//! Standard RoI head (mmdet `StandardRoIHead`): box branch and mask branch, their training targets
//! (assign → prepend GTs → sample), losses and test-time detection (`multiclass_nms`).
//!
//! # Checkpoint keys
//! `roi_head.bbox_head.*` ([`BoxHead`]), `roi_head.mask_head.*` ([`MaskHead`]).

use cellseg_core::Instances;
use tch::{Device, Kind, Tensor, nn};

use crate::assigner::MaxIouAssigner;
use crate::box_coder::BoxCoder;
use crate::box_head::{BoxHead, BoxPredictions};
use crate::config::HeadsConfig;
use crate::losses::{box_loss, ce_sum};
use crate::mask_head::MaskHead;
use crate::mask_target::{MaskTargetJob, mask_targets_batch};
use crate::nms::batched_nms;
use crate::roi_align::RoiExtractor;
use crate::sampler::{RandomSampler, host_counts, positions};

/// Detections of one image before mask pasting.
#[derive(Debug)]
pub struct RawDetections {
    /// `[K, 4]` boxes, clipped to the image.
    pub boxes: Tensor,
    /// `[K]` class scores.
    pub scores: Tensor,
    /// `[K]` int64 labels in `0..C`.
    pub labels: Tensor,
}

/// Losses of the RoI head.
#[derive(Debug)]
pub struct RoiLosses {
    /// Softmax CE over sampled RoIs.
    pub cls: Tensor,
    /// Box regression over positives / number sampled.
    pub reg: Tensor,
    /// Mask BCE (mean over positives × M × M).
    pub mask: Tensor,
}

/// The sampled RoIs of a batch with their targets.
#[derive(Debug)]
pub struct SampledRois {
    /// `[R, 5]` `(batch, x1, y1, x2, y2)`, positives of each image first.
    pub rois: Tensor,
    /// `[R]` int64 labels, background = C.
    pub labels: Tensor,
    /// `[R]` bool: positive rows.
    pub is_pos: Tensor,
    /// `[P, 4]` regression targets of the positive rows (in row order).
    pub bbox_targets: Tensor,
    /// `[P, 5]` positive RoIs.
    pub pos_rois: Tensor,
    /// `[P]` labels of the positive RoIs.
    pub pos_labels: Tensor,
    /// `[P, M, M]` mask targets of the positive RoIs.
    pub mask_targets: Tensor,
}

/// Box and mask branches.
#[derive(Debug)]
pub struct RoiHead {
    bbox_roi_extractor: RoiExtractor,
    mask_roi_extractor: RoiExtractor,
    bbox_head: BoxHead,
    mask_head: MaskHead,
    coder: BoxCoder,
    assigner: MaxIouAssigner,
    sampler: RandomSampler,
    cfg: HeadsConfig,
}

impl RoiHead {
    /// Builds the branches under `p` (`roi_head`), for `in_channels`-channel features.
    pub fn new(p: &nn::Path, cfg: &HeadsConfig, in_channels: i64) -> Self {
        let bh = &cfg.bbox_head;
        Self {
            bbox_roi_extractor: RoiExtractor::new(&bh.roi),
            mask_roi_extractor: RoiExtractor::new(&cfg.mask_head.roi),
            bbox_head: BoxHead::new(&(p / "bbox_head"), bh, in_channels, cfg.num_classes),
            mask_head: MaskHead::new(
                &(p / "mask_head"),
                &cfg.mask_head,
                in_channels,
                cfg.num_classes,
                bh.class_order,
            ),
            coder: BoxCoder::new(&bh.coder),
            assigner: MaxIouAssigner::new(&bh.assigner),
            sampler: RandomSampler::new(&bh.sampler),
            cfg: cfg.clone(),
        }
    }

    /// 7×7 RoI features `[R, C, 7, 7]` of `rois` `[R, 5]`.
    pub fn box_roi_features(&self, feats: &[Tensor], rois: &Tensor) -> Tensor {
        self.bbox_roi_extractor.forward(feats, rois)
    }

    /// 14×14 RoI features `[R, C, 14, 14]` of `rois` `[R, 5]`.
    pub fn mask_roi_features(&self, feats: &[Tensor], rois: &Tensor) -> Tensor {
        self.mask_roi_extractor.forward(feats, rois)
    }

    /// Class logits and deltas of `rois` `[R, 5]`.
    pub fn box_predictions(&self, feats: &[Tensor], rois: &Tensor) -> BoxPredictions {
        self.bbox_head.forward(&self.box_roi_features(feats, rois))
    }

    /// Mask logits `[R, C, 28, 28]` of `rois` `[R, 5]`.
    pub fn mask_logits(&self, feats: &[Tensor], rois: &Tensor) -> Tensor {
        self.mask_head.forward(&self.mask_roi_features(feats, rois))
    }

    /// Assigns and samples `proposals[b]` `[N_b, 4]` against `targets[b]` and builds all targets.
    ///
    /// Host synchronisations for the whole batch: one copy of every GT box and label to the
    /// device, one copy of the candidate counts of every image back (the sampler needs them),
    /// one copy of the positive boxes and their GT indices back (mask targets are planned on
    /// the host), and one copy of all mask-target inputs to the device
    /// ([`mask_targets_batch`]). The results, and the random draws, equal image-by-image sampling.
    pub fn sample(
        &self,
        proposals: &[Tensor],
        targets: &[Instances],
        device: Device,
    ) -> SampledRois {
        let _g = tch::no_grad_guard();
        let c = self.cfg.num_classes;
        let m = self.cfg.mask_head.mask_size;
        let gts = gts_to_device(targets, device);
        // 1. Assign every image (device only) and copy all candidate counts at once.
        let mut assigned = Vec::with_capacity(proposals.len());
        for (props, (gt_boxes, gt_labels)) in proposals.iter().zip(&gts) {
            let props = props.to_kind(Kind::Float).to_device(device);
            let res = self.assigner.assign(&props, gt_boxes, gt_labels);
            let g = gt_boxes.size()[0];
            assigned.push(if self.cfg.bbox_head.sampler.add_gt_as_proposals && g > 0 {
                (
                    Tensor::cat(&[gt_boxes, &props], 0),
                    Tensor::cat(
                        &[&Tensor::arange_start(1, g + 1, (Kind::Int64, device)), &res.gt_inds],
                        0,
                    ),
                    Tensor::cat(&[gt_labels, &res.labels], 0),
                )
            } else {
                (props, res.gt_inds, res.labels)
            });
        }
        let counts = host_counts(assigned.iter().map(|a| &a.1));
        // 2. Sample (same draws, same order as image by image) and build the rows.
        let mut rois = Vec::new();
        let mut labels = Vec::new();
        let mut is_pos = Vec::new();
        let mut tg = Vec::new();
        let mut pos_rois = Vec::new();
        let mut pos_labels = Vec::new();
        let mut pos_host = Vec::new();
        let mut num_pos = Vec::new();
        for (b, ((boxes, gt_inds, lab), (gt_boxes, _))) in assigned.iter().zip(&gts).enumerate() {
            let s = self.sampler.sample_counted(gt_inds, counts[b].0, counts[b].1);
            let (np, nn_) = (s.pos_inds.size()[0], s.neg_inds.size()[0]);
            let pb = boxes.index_select(0, &s.pos_inds);
            let nb = boxes.index_select(0, &s.neg_inds);
            let pos_gt = (gt_inds.index_select(0, &s.pos_inds) - 1).clamp_min(0);
            let bcol = |k: i64| Tensor::full([k, 1], b as i64, (Kind::Float, device));
            let sampled = Tensor::cat(&[&pb, &nb], 0);
            rois.push(Tensor::cat(&[bcol(np + nn_), sampled], 1));
            let pl = lab.index_select(0, &s.pos_inds);
            labels.push(Tensor::cat(&[&pl, &Tensor::full([nn_], c, (Kind::Int64, device))], 0));
            is_pos.push(Tensor::cat(
                &[
                    Tensor::ones([np], (Kind::Bool, device)),
                    Tensor::zeros([nn_], (Kind::Bool, device)),
                ],
                0,
            ));
            if np > 0 {
                tg.push(self.coder.encode(&pb, &gt_boxes.index_select(0, &pos_gt)));
            }
            pos_rois.push(Tensor::cat(&[bcol(np), pb.shallow_clone()], 1));
            pos_labels.push(pl);
            // Positive boxes and their GT index (exact in float32) for the host.
            pos_host.push(Tensor::cat(
                &[pb.to_kind(Kind::Float), pos_gt.to_kind(Kind::Float).unsqueeze(1)],
                1,
            ));
            num_pos.push(np as usize);
        }
        // 3. Mask targets: one copy of the positives back, one copy of the inputs forth.
        let host = if pos_host.is_empty() {
            Vec::new()
        } else {
            Vec::<f32>::try_from(Tensor::cat(&pos_host, 0).to_device(Device::Cpu).reshape([-1]))
                .unwrap_or_default()
        };
        let mut boxes_h = Vec::with_capacity(num_pos.len());
        let mut gi_h = Vec::with_capacity(num_pos.len());
        let mut at = 0;
        for &np in &num_pos {
            let rows = &host[at * 5..(at + np) * 5];
            boxes_h.push(rows.chunks(5).flat_map(|r| r[..4].to_vec()).collect::<Vec<f32>>());
            gi_h.push(rows.chunks(5).map(|r| r[4] as i64).collect::<Vec<i64>>());
            at += np;
        }
        let jobs: Vec<MaskTargetJob<'_>> = boxes_h
            .iter()
            .zip(&gi_h)
            .zip(targets)
            .map(|((boxes, gt_index), inst)| MaskTargetJob {
                boxes,
                gt_index,
                masks: &inst.masks,
                size: inst.image_size,
            })
            .collect();
        let mtg = mask_targets_batch(
            &jobs,
            m,
            self.cfg.mask_head.aligned_targets,
            self.cfg.mask_head.binarize_targets,
            device,
        );
        let f = (Kind::Float, device);
        SampledRois {
            rois: Tensor::cat(&rois, 0),
            labels: Tensor::cat(&labels, 0),
            is_pos: Tensor::cat(&is_pos, 0),
            bbox_targets: if tg.is_empty() {
                Tensor::zeros([0, 4], f)
            } else {
                Tensor::cat(&tg, 0)
            },
            pos_rois: Tensor::cat(&pos_rois, 0),
            pos_labels: Tensor::cat(&pos_labels, 0),
            mask_targets: Tensor::cat(&mtg, 0),
        }
    }

    /// Losses of both branches on `sampled` RoIs.
    pub fn losses(&self, feats: &[Tensor], sampled: &SampledRois) -> RoiLosses {
        let pred = self.box_predictions(feats, &sampled.rois);
        let r = sampled.rois.size()[0] as f64;
        let cls = ce_sum(&pred.cls, &sampled.labels, r);
        // The positive rows, ascending (= `nonzero`), without a host synchronisation: their
        // number is known (`pos_rois`).
        let pos = positions(&sampled.is_pos, sampled.pos_rois.size()[0]);
        let c = self.cfg.num_classes;
        let reg = if pos.size()[0] > 0 {
            let lab = sampled.labels.index_select(0, &pos);
            let rp = pred.reg.index_select(0, &pos).view([-1, c, 4]);
            let idx = lab.view([-1, 1, 1]).expand([-1, 1, 4], false);
            let rp = rp.gather(1, &idx, false).squeeze_dim(1);
            box_loss(self.cfg.bbox_head.loss_bbox, &rp, &sampled.bbox_targets, r)
        } else {
            pred.reg.sum(Kind::Float) * 0.0
        };
        let p = sampled.pos_rois.size()[0];
        let mask = if p > 0 {
            let logits = self.mask_logits(feats, &sampled.pos_rois);
            let m = logits.size()[2];
            let idx = sampled.pos_labels.view([-1, 1, 1, 1]).expand([-1, 1, m, m], false);
            let sel = logits.gather(1, &idx, false).squeeze_dim(1);
            sel.binary_cross_entropy_with_logits::<Tensor>(
                &sampled.mask_targets,
                None,
                None,
                tch::Reduction::Mean,
            )
        } else {
            // Keep the mask head in the graph with a zero loss.
            feats[0].sum(Kind::Float) * 0.0
        };
        RoiLosses { cls, reg, mask }
    }

    /// Test-time boxes (mmdet `get_bboxes` + `multiclass_nms`): softmax, class-specific decode
    /// clipped to the image, `score > score_thr`, per-class NMS, top `max_per_img`.
    pub fn detect(
        &self,
        feats: &[Tensor],
        proposals: &[Tensor],
        image_sizes: &[(i64, i64)],
    ) -> Vec<RawDetections> {
        let _g = tch::no_grad_guard();
        let dev = feats[0].device();
        let rois = proposals_to_rois(proposals, dev);
        let pred = self.box_predictions(feats, &rois);
        let c = self.cfg.num_classes;
        let t = &self.cfg.test;
        let mut out = Vec::new();
        let mut start = 0;
        for (b, props) in proposals.iter().enumerate() {
            let n = props.size()[0];
            let cls = pred.cls.slice(0, start, start + n, 1);
            let reg = pred.reg.slice(0, start, start + n, 1);
            start += n;
            let scores = cls.softmax(-1, Kind::Float).slice(1, 0, c, 1); // drop background
            let boxes = self
                .coder
                .decode(&props.to_device(dev), &reg, Some(image_sizes[b]))
                .view([n, c, 4]);
            let labels = Tensor::arange(c, (Kind::Int64, dev)).view([1, c]).expand([n, c], false);
            let mut boxes = boxes.reshape([-1, 4]);
            let mut scores = scores.reshape([-1]);
            let mut labels = labels.reshape([-1]);
            let mut keep = scores.gt(t.score_thr);
            if t.min_bbox_size >= 0.0 {
                let w = boxes.select(1, 2) - boxes.select(1, 0);
                let h = boxes.select(1, 3) - boxes.select(1, 1);
                keep = keep.logical_and(&w.ge(t.min_bbox_size)).logical_and(&h.ge(t.min_bbox_size));
            }
            let keep = keep.nonzero().view([-1]);
            boxes = boxes.index_select(0, &keep);
            scores = scores.index_select(0, &keep);
            labels = labels.index_select(0, &keep);
            let k = batched_nms(&boxes, &scores, &labels, t.nms_iou);
            let k = k.slice(0, 0, (t.max_per_img as i64).min(k.size()[0]), 1);
            out.push(RawDetections {
                boxes: boxes.index_select(0, &k),
                scores: scores.index_select(0, &k),
                labels: labels.index_select(0, &k),
            });
        }
        out
    }
}

/// GT boxes `[G_b, 4]` (float32) and labels `[G_b]` (int64) of every image on `device`, from ONE
/// host-to-device copy (labels travel as float32, exact below 2^24).
pub fn gts_to_device(targets: &[Instances], device: Device) -> Vec<(Tensor, Tensor)> {
    let mut v: Vec<f32> = Vec::new();
    for inst in targets {
        for (b, &l) in inst.boxes.iter().zip(&inst.labels) {
            v.extend_from_slice(&[b.x1, b.y1, b.x2, b.y2, l as f32]);
        }
    }
    let all = Tensor::from_slice(&v).view([-1, 5]).to_device(device);
    let mut at = 0;
    targets
        .iter()
        .map(|inst| {
            let g = inst.boxes.len() as i64;
            let t = all.narrow(0, at, g);
            at += g;
            (t.narrow(1, 0, 4), t.select(1, 4).to_kind(Kind::Int64))
        })
        .collect()
}

/// `[R, 5]` RoIs from per-image boxes `[N_b, 4]`.
pub fn proposals_to_rois(boxes: &[Tensor], device: Device) -> Tensor {
    let parts: Vec<Tensor> = boxes
        .iter()
        .enumerate()
        .map(|(b, x)| {
            let n = x.size()[0];
            Tensor::cat(
                &[
                    Tensor::full([n, 1], b as i64, (Kind::Float, device)),
                    x.to_kind(Kind::Float).to_device(device),
                ],
                1,
            )
        })
        .collect();
    if parts.is_empty() {
        return Tensor::zeros([0, 5], (Kind::Float, device));
    }
    Tensor::cat(&parts, 0)
}
