//! The training targets of one RoI stage (mmdet `StandardRoIHead._bbox_forward_train` and
//! `_mask_forward_train` before the heads run): assign the proposals to the ground truths, prepend
//! the GT boxes as proposals, sample, encode the box targets with the stage's coder and build the
//! mask targets of the positives.
//!
//! Each cascade stage has its own [`RoiSampler`] (IoU 0.5 / 0.6 / 0.7, its own coder stds), and the
//! sampled rows remember which ones were GT-added ([`SampledRois::is_gt`]) so that the refinement
//! between stages can drop them, as mmdet does.

use cellseg_core::{ImageSize, Instances};
use tch::{Device, Kind, Tensor};

use crate::assign::assigner::{AssignerConfig, MaxIouAssigner};
use crate::assign::mask_target::{MaskTargetJob, mask_targets_batch};
use crate::assign::sampler::{RandomSampler, SamplerConfig, host_counts};
use crate::ops::box_coder::BoxCoder;

/// The ground truths of a training batch: the instances on the host (the mask targets are
/// built from their bitmaps there) and their boxes and labels on the device, copied ONCE per
/// step and shared by the RPN and every RoI stage's sampler.
#[derive(Debug)]
pub struct BatchTargets<'a> {
    instances: &'a [Instances],
    /// `[G_b, 4]` float32 boxes and `[G_b]` int64 labels of every image.
    on_device: Vec<(Tensor, Tensor)>,
    device: Device,
}

impl<'a> BatchTargets<'a> {
    /// `instances` with their boxes and labels on `device`, in one host-to-device copy (labels
    /// travel as float32, exact below 2^24).
    pub fn new(instances: &'a [Instances], device: Device) -> Self {
        let mut v: Vec<f32> = Vec::new();
        for inst in instances {
            for (b, &l) in inst.boxes.iter().zip(&inst.labels) {
                v.extend_from_slice(&[b.x1, b.y1, b.x2, b.y2, l as f32]);
            }
        }
        let all = crate::transfers::upload(&Tensor::from_slice(&v).view([-1, 5]), device);
        let mut at = 0;
        let on_device = instances
            .iter()
            .map(|inst| {
                let g = inst.boxes.len() as i64;
                let t = all.narrow(0, at, g);
                at += g;
                (t.narrow(1, 0, 4), t.select(1, 4).to_kind(Kind::Int64))
            })
            .collect();
        Self { instances, on_device, device }
    }

    /// The instances, in batch order.
    pub fn instances(&self) -> &'a [Instances] {
        self.instances
    }

    /// GT boxes `[G_b, 4]` of every image, on the device.
    pub fn boxes(&self) -> Vec<Tensor> {
        self.on_device.iter().map(|(b, _)| b.shallow_clone()).collect()
    }

    /// The device the boxes and labels are on.
    pub fn device(&self) -> Device {
        self.device
    }
}

/// How the mask targets of the positive RoIs are built (mmdet `mask_target`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MaskTargetConfig {
    /// Side of the targets (28).
    pub size: i64,
    /// Half-pixel aligned RoIAlign over the GT mask (mmdet: true; torchvision: false).
    pub aligned: bool,
    /// Binarise at 0.5 (mmdet: true; torchvision: false).
    pub binarize: bool,
}

/// The sampled RoIs of a batch with their targets. Rows are grouped by image in batch order; in
/// each image the positives come first.
#[derive(Debug)]
pub struct SampledRois {
    /// `[R, 5]` `(batch, x1, y1, x2, y2)`.
    pub rois: Tensor,
    /// `[R]` int64 labels, background = C.
    pub labels: Tensor,
    /// `[R]` bool: positive rows.
    pub is_pos: Tensor,
    /// `[R]` bool: rows that are ground-truth boxes added as proposals (always positive).
    pub is_gt: Tensor,
    /// `[P, 4]` regression targets of the positive rows (in row order).
    pub bbox_targets: Tensor,
    /// `[P, 5]` positive RoIs.
    pub pos_rois: Tensor,
    /// `[P]` labels of the positive RoIs.
    pub pos_labels: Tensor,
    /// `[P, M, M]` mask targets of the positive RoIs (`[0, M, M]` from
    /// [`RoiSampler::sample_with`] without masks).
    pub mask_targets: Tensor,
    /// Rows per image.
    pub rows_per_image: Vec<i64>,
}

impl SampledRois {
    /// The proposals of every image for the next cascade stage: the refined `rois` `[R, 5]` of
    /// these rows without the GT-added ones (mmdet `refine_bboxes` drops `pos_is_gt`). One host
    /// synchronisation (the number of kept rows per image).
    pub fn next_stage_proposals(&self, refined: &Tensor) -> Vec<Tensor> {
        let keep = self.is_gt.logical_not();
        let mut out = Vec::with_capacity(self.rows_per_image.len());
        let counts: Vec<i64> = {
            let parts: Vec<Tensor> = split_rows(&keep, &self.rows_per_image)
                .iter()
                .map(|k| k.sum(Kind::Int64).view([1]))
                .collect();
            if parts.is_empty() {
                Vec::new()
            } else {
                Vec::<i64>::try_from(crate::transfers::download(&Tensor::cat(&parts, 0)))
                    .expect("counts of kept rows are int64")
            }
        };
        let mut start = 0;
        for (&n, &k) in self.rows_per_image.iter().zip(&counts) {
            let rows = refined.narrow(0, start, n);
            let kept = crate::assign::sampler::positions(&keep.narrow(0, start, n), k);
            out.push(rows.index_select(0, &kept).narrow(1, 1, 4));
            start += n;
        }
        out
    }
}

/// `t` split into consecutive row blocks of `counts`.
fn split_rows(t: &Tensor, counts: &[i64]) -> Vec<Tensor> {
    let mut start = 0;
    counts
        .iter()
        .map(|&n| {
            let s = t.narrow(0, start, n);
            start += n;
            s
        })
        .collect()
}

/// Assigner + sampler + target builders of one RoI stage.
#[derive(Debug)]
pub struct RoiSampler {
    assigner: MaxIouAssigner,
    sampler: RandomSampler,
    add_gt_as_proposals: bool,
    coder: BoxCoder,
    mask: MaskTargetConfig,
    num_classes: i64,
}

impl RoiSampler {
    /// The targets of a stage whose boxes are encoded by `coder` (the stage's box head's).
    pub fn new(
        assigner: &AssignerConfig,
        sampler: &SamplerConfig,
        coder: BoxCoder,
        mask: MaskTargetConfig,
        num_classes: i64,
    ) -> Self {
        Self {
            assigner: MaxIouAssigner::new(assigner),
            sampler: RandomSampler::new(sampler),
            add_gt_as_proposals: sampler.add_gt_as_proposals,
            coder,
            mask,
            num_classes,
        }
    }

    /// Assigns and samples `proposals[b]` `[N_b, 4]` against `targets[b]` and builds all targets.
    ///
    /// `canvas` is the padded batch size `(H, W)`: mmdet's `Pad` pads the GT bitmaps with the
    /// image, so the mask targets' RoIAlign clips the RoIs to, and samples, the padded bitmap (a
    /// sample near the last image row blends with the zero padding, as in mmdet).
    ///
    /// Host synchronisations for the whole batch (the GT boxes and labels are already on the
    /// device, [`BatchTargets`]): one copy of the candidate counts of every image back (the
    /// sampler needs them), one copy of the positive boxes and their GT indices back (mask
    /// targets are planned on the host), and one copy of all mask-target inputs to the device
    /// ([`mask_targets_batch`]). The results, and the random draws, equal image-by-image sampling.
    pub fn sample(
        &self,
        proposals: &[Tensor],
        targets: &BatchTargets<'_>,
        canvas: (i64, i64),
    ) -> SampledRois {
        self.sample_with(proposals, targets, canvas, true)
    }

    /// [`Self::sample`] without the mask targets when `with_masks` is false (`mask_targets` is
    /// then `[0, M, M]`): HTC's interleaved training trains its mask heads on a second sampling
    /// of the refined boxes, so the first one needs only the box targets.
    pub fn sample_with(
        &self,
        proposals: &[Tensor],
        targets: &BatchTargets<'_>,
        canvas: (i64, i64),
        with_masks: bool,
    ) -> SampledRois {
        let _g = tch::no_grad_guard();
        let c = self.num_classes;
        let device = targets.device();
        let canvas = ImageSize::new(canvas.0.max(0) as usize, canvas.1.max(0) as usize);
        let gts = &targets.on_device;
        // 1. Assign every image (device only) and copy all candidate counts at once.
        let mut assigned = Vec::with_capacity(proposals.len());
        let mut num_gt_rows = Vec::with_capacity(proposals.len());
        for (props, (gt_boxes, gt_labels)) in proposals.iter().zip(gts) {
            let props = props.to_kind(Kind::Float).to_device(device);
            let res = self.assigner.assign(&props, gt_boxes, gt_labels);
            let g = gt_boxes.size()[0];
            if self.add_gt_as_proposals && g > 0 {
                num_gt_rows.push(g);
                assigned.push((
                    Tensor::cat(&[gt_boxes, &props], 0),
                    Tensor::cat(
                        &[&Tensor::arange_start(1, g + 1, (Kind::Int64, device)), &res.gt_inds],
                        0,
                    ),
                    Tensor::cat(&[gt_labels, &res.labels], 0),
                ));
            } else {
                num_gt_rows.push(0);
                assigned.push((props, res.gt_inds, res.labels));
            }
        }
        let counts = host_counts(assigned.iter().map(|a| &a.1));
        // 2. Sample (same draws, same order as image by image) and build the rows.
        let mut rois = Vec::new();
        let mut labels = Vec::new();
        let mut is_pos = Vec::new();
        let mut is_gt = Vec::new();
        let mut tg = Vec::new();
        let mut pos_rois = Vec::new();
        let mut pos_labels = Vec::new();
        let mut pos_host = Vec::new();
        let mut num_pos = Vec::new();
        let mut rows_per_image = Vec::new();
        for (b, ((boxes, gt_inds, lab), (gt_boxes, _))) in assigned.iter().zip(gts).enumerate() {
            let s = self.sampler.sample_counted(gt_inds, counts[b].0, counts[b].1);
            let (np, nn_) = (s.pos_inds.size()[0], s.neg_inds.size()[0]);
            let pb = boxes.index_select(0, &s.pos_inds);
            let nb = boxes.index_select(0, &s.neg_inds);
            let pos_gt = (gt_inds.index_select(0, &s.pos_inds) - 1).clamp_min(0);
            let bcol = |k: i64| Tensor::full([k, 1], b as i64, (Kind::Float, device));
            let sampled = Tensor::cat(&[&pb, &nb], 0);
            rois.push(Tensor::cat(&[bcol(np + nn_), sampled], 1));
            rows_per_image.push(np + nn_);
            let pl = lab.index_select(0, &s.pos_inds);
            labels.push(Tensor::cat(&[&pl, &Tensor::full([nn_], c, (Kind::Int64, device))], 0));
            is_pos.push(Tensor::cat(
                &[
                    Tensor::ones([np], (Kind::Bool, device)),
                    Tensor::zeros([nn_], (Kind::Bool, device)),
                ],
                0,
            ));
            // The GT rows are the first `num_gt_rows[b]` candidates, always positive.
            is_gt.push(Tensor::cat(
                &[s.pos_inds.lt(num_gt_rows[b]), Tensor::zeros([nn_], (Kind::Bool, device))],
                0,
            ));
            if np > 0 {
                tg.push(self.coder.encode(&pb, &gt_boxes.index_select(0, &pos_gt)));
            }
            pos_rois.push(Tensor::cat(&[bcol(np), pb.shallow_clone()], 1));
            pos_labels.push(pl);
            // Positive boxes and their GT index (exact in float32) for the host, when mask
            // targets are wanted.
            if with_masks {
                pos_host.push(Tensor::cat(
                    &[pb.to_kind(Kind::Float), pos_gt.to_kind(Kind::Float).unsqueeze(1)],
                    1,
                ));
            }
            num_pos.push(if with_masks { np as usize } else { 0 });
        }
        // 3. Mask targets: one copy of the positives back, one copy of the inputs forth.
        let host = if pos_host.is_empty() {
            Vec::new()
        } else {
            Vec::<f32>::try_from(
                crate::transfers::download(&Tensor::cat(&pos_host, 0)).reshape([-1]),
            )
            .expect("positive boxes are float32")
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
            .zip(targets.instances)
            .map(|((boxes, gt_index), inst)| MaskTargetJob {
                boxes,
                gt_index,
                masks: &inst.masks,
                size: ImageSize::new(
                    canvas.height.max(inst.image_size.height),
                    canvas.width.max(inst.image_size.width),
                ),
            })
            .collect();
        let mtg = mask_targets_batch(
            &jobs,
            self.mask.size,
            self.mask.aligned,
            self.mask.binarize,
            device,
        );
        let f = (Kind::Float, device);
        let cat_or =
            |v: &[Tensor], empty: Tensor| if v.is_empty() { empty } else { Tensor::cat(v, 0) };
        SampledRois {
            rois: cat_or(&rois, Tensor::zeros([0, 5], f)),
            labels: cat_or(&labels, Tensor::zeros([0], (Kind::Int64, device))),
            is_pos: cat_or(&is_pos, Tensor::zeros([0], (Kind::Bool, device))),
            is_gt: cat_or(&is_gt, Tensor::zeros([0], (Kind::Bool, device))),
            bbox_targets: cat_or(&tg, Tensor::zeros([0, 4], f)),
            pos_rois: cat_or(&pos_rois, Tensor::zeros([0, 5], f)),
            pos_labels: cat_or(&pos_labels, Tensor::zeros([0], (Kind::Int64, device))),
            mask_targets: cat_or(&mtg, Tensor::zeros([0, self.mask.size, self.mask.size], f)),
            rows_per_image,
        }
    }
}
