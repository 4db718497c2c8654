//! The seed's `EnsembleModel.aug_test` (SEED.md §4.2): features of every member and view, the
//! optional classifier pass that picks the cell type and the members, then the three merge
//! points in order.

use cellseg_core::{CellType, ImageSize};
use cellseg_heads::heads::rpn::{Proposals, RpnOutputs};
use cellseg_heads::roi_heads::RawDetections;
use cellseg_heads::{Features, TwoStageDetector};
use cellseg_postproc::SoftDetections;
use tch::{Kind, Tensor};

use crate::boxes::{self, MergedBoxes};
use crate::config::EnsembleConfig;
use crate::proposals::{CellTypeGuess, majority_cell_type, merge_rpn_outputs};
use crate::{Error, Result, masks};

/// One model of the ensemble and the name errors and logs call it by.
#[derive(Debug, Clone, Copy)]
pub struct Member<'m> {
    /// The name (e.g. its run folder).
    pub name: &'m str,
    /// The detector, of any architecture.
    pub model: &'m dyn TwoStageDetector,
}

/// Several detectors merged at the proposal, box and mask stages over flip views. A single
/// member is an ensemble of one.
#[derive(Debug)]
pub struct Ensemble<'m> {
    members: Vec<Member<'m>>,
    config: EnsembleConfig,
    num_classes: i64,
}

/// Everything the ensemble computed for one image, each merge point's result included.
#[derive(Debug)]
pub struct Prediction {
    /// The members that produced the proposals, boxes and masks.
    pub used: Vec<usize>,
    /// The classifier members' majority label, when `usage` is set (it picked `used` and the box
    /// settings).
    pub voted: Option<CellType>,
    /// The RPN heuristic on `used`'s merged outputs (it picked the proposal settings).
    pub guess: CellTypeGuess,
    /// The cell type whose box settings applied: `voted`, else the guess.
    pub cell_type: CellType,
    /// The merged RPN outputs of the identity view.
    pub rpn: RpnOutputs,
    /// The shared proposals.
    pub proposals: Proposals,
    /// The merged boxes and class probabilities of every proposal.
    pub merged: MergedBoxes,
    /// The kept detections, best first.
    pub detections: RawDetections,
    /// `[K, M, M]` merged mask probabilities of the detections' labels.
    pub mask_probs: Tensor,
    /// The detections with their pasted soft masks (what post-processing takes).
    pub soft: SoftDetections,
}

impl<'m> Ensemble<'m> {
    /// An ensemble of `members` (in the order `usage` indexes them) run with `config`.
    ///
    /// # Errors
    /// [`Error::Config`] for an invalid config or a usage index out of range; [`Error::Mismatch`]
    /// naming the members when there is none, their class counts differ, `num_classes` exceeds
    /// them, their weights' devices or dtypes differ, or their RPN anchors or box coders differ
    /// (their RPN outputs could not be merged).
    pub fn new(members: Vec<Member<'m>>, config: EnsembleConfig) -> Result<Self> {
        config.validate()?;
        config.check_members(members.len())?;
        let first =
            members.first().ok_or_else(|| Error::Mismatch("no member to ensemble".into()))?;
        let c = first.model.num_classes();
        let rpn = first.model.rpn_head().config();
        for m in &members[1..] {
            if m.model.num_classes() != c {
                return Err(Error::Mismatch(format!(
                    "members `{}` and `{}` predict different numbers of classes ({c} and {})",
                    first.name,
                    m.name,
                    m.model.num_classes()
                )));
            }
            let (d, k) = (m.model.device(), m.model.weight_kind());
            if (d, k) != (first.model.device(), first.model.weight_kind()) {
                return Err(Error::Mismatch(format!(
                    "members `{}` and `{}` have weights on different devices or of different \
                     dtypes ({:?} {:?} and {d:?} {k:?}); one image cannot feed both",
                    first.name,
                    m.name,
                    first.model.device(),
                    first.model.weight_kind()
                )));
            }
            let other = m.model.rpn_head().config();
            if other.anchors != rpn.anchors || other.coder != rpn.coder {
                return Err(Error::Mismatch(format!(
                    "members `{}` and `{}` have different RPN anchors or box coders; their RPN \
                     outputs cannot be averaged",
                    first.name, m.name
                )));
            }
        }
        let num_classes = match config.num_classes {
            Some(n) if n as i64 > c => {
                return Err(Error::Mismatch(format!(
                    "num_classes = {n} but the members predict {c} classes"
                )));
            }
            Some(n) => n as i64,
            None => c,
        };
        Ok(Self { members, config, num_classes })
    }

    /// The members.
    pub fn members(&self) -> &[Member<'m>] {
        &self.members
    }

    /// The config.
    pub fn config(&self) -> &EnsembleConfig {
        &self.config
    }

    /// The foreground classes read from the members.
    pub fn num_classes(&self) -> i64 {
        self.num_classes
    }

    /// Predicts one normalised, padded image `[1, 3, H, W]` (on the members' device) whose
    /// unpadded size is `size`.
    ///
    /// # Errors
    /// [`Error::Mismatch`] naming the shape when `image` is not one 3-channel image at least as
    /// large as `size`; [`cellseg_heads::Error::Input`] when it is not of the members' dtype
    /// on their device; the heads' errors; libtorch's
    /// ([`cellseg_heads::Error::OutOfMemory`], [`cellseg_heads::Error::Libtorch`]) naming the
    /// image.
    pub fn predict(&self, image: &Tensor, size: ImageSize) -> Result<Prediction> {
        let _g = tch::no_grad_guard();
        let shape = image.size();
        let hw = (size.height as i64, size.width as i64);
        if shape.len() != 4 || shape[0] != 1 || shape[1] != 3 || shape[2] < hw.0 || shape[3] < hw.1
        {
            return Err(Error::Mismatch(format!(
                "the ensemble takes one padded image [1, 3, H >= {}, W >= {}], got {shape:?}",
                hw.0, hw.1
            )));
        }
        // The members share device and dtype (checked by `new`): the first one's check holds
        // for all.
        self.members[0].model.check_input(image)?;
        cellseg_heads::libtorch::guarded("ensemble predict", image, || {
            self.predict_checked(image, size)
        })
    }

    /// [`Self::predict`] of a checked image.
    fn predict_checked(&self, image: &Tensor, size: ImageSize) -> Result<Prediction> {
        let hw = (size.height as i64, size.width as i64);
        let views: Vec<Tensor> = self.config.views.iter().map(|v| v.image(image, hw)).collect();
        let mut cache = FeatureCache { views: Tensor::cat(&views, 0), slots: Vec::new() };
        cache.slots.resize_with(self.members.len(), || None);
        let n = self.members.len();

        let (used, voted) = match &self.config.usage {
            Some(u) if !u.is_everyone(n) => {
                let cls = u.classifiers(n);
                let (rpn, guess) = self.merged_rpn(&mut cache, &cls)?;
                let props = self.proposals(&rpn, &cls, guess.cell_type, hw)?;
                let (_, dets) = self.boxes(&mut cache, &cls, &props, guess.cell_type, hw)?;
                let labels = Vec::<i64>::try_from(&dets.labels)?;
                let labels: Vec<usize> = labels.into_iter().map(|l| l as usize).collect();
                let voted = majority_cell_type(&labels);
                if voted.is_none() {
                    tracing::warn!(
                        detections = labels.len(),
                        fallback = guess.cell_type.name(),
                        "the classifier members found no cell type; using the RPN heuristic's"
                    );
                }
                (u.for_type(voted.unwrap_or(guess.cell_type), n), voted)
            }
            _ => ((0..n).collect(), None),
        };
        let (rpn, guess) = self.merged_rpn(&mut cache, &used)?;
        let cell_type = voted.unwrap_or(guess.cell_type);
        let proposals = self.proposals(&rpn, &used, guess.cell_type, hw)?;
        let (merged, detections) = self.boxes(&mut cache, &used, &proposals, cell_type, hw)?;
        let mask_probs = self.masks(&mut cache, &used, &detections, hw)?;
        let soft = masks::paste(&detections, &mask_probs, size)?;
        tracing::debug!(
            used = ?used,
            cell_type = cell_type.name(),
            proposals = proposals.boxes.size()[0],
            detections = soft.boxes.len(),
            "ensemble prediction"
        );
        Ok(Prediction {
            used,
            voted,
            guess,
            cell_type,
            rpn,
            proposals,
            merged,
            detections,
            mask_probs,
            soft,
        })
    }

    /// Merge point 1, first half: the merged RPN outputs of `used` on the identity view and the
    /// cell type they suggest.
    fn merged_rpn(
        &self,
        cache: &mut FeatureCache,
        used: &[usize],
    ) -> Result<(RpnOutputs, CellTypeGuess)> {
        let outs: Vec<RpnOutputs> = used
            .iter()
            .map(|&i| {
                let m = self.members[i].model;
                Ok(m.rpn_outputs(&identity(cache.get(i, m)?))?)
            })
            .collect::<Result<_>>()?;
        let rpn = merge_rpn_outputs(&outs)?;
        let level_counts = self.config.heuristic.level_counts(&rpn);
        let cell_type = self.config.heuristic.cell_type(&level_counts);
        Ok((rpn, CellTypeGuess { level_counts, cell_type }))
    }

    /// Merge point 1, second half: proposals of the merged outputs with `cell_type`'s settings,
    /// decoded by the first used member's RPN head.
    fn proposals(
        &self,
        rpn: &RpnOutputs,
        used: &[usize],
        cell_type: CellType,
        hw: (i64, i64),
    ) -> Result<Proposals> {
        let cfg = self.config.proposals.for_type(cell_type);
        let head = self.members[used[0]].model;
        let mut p = head.proposals(rpn, &[hw], &cfg)?;
        Ok(p.swap_remove(0))
    }

    /// Merge point 2: every used member × view on the proposals, merged and selected.
    fn boxes(
        &self,
        cache: &mut FeatureCache,
        used: &[usize],
        proposals: &Proposals,
        cell_type: CellType,
        hw: (i64, i64),
    ) -> Result<(MergedBoxes, RawDetections)> {
        let mut passes = Vec::new();
        for &i in used {
            let m = self.members[i].model;
            let feats = cache.get(i, m)?;
            passes.extend(boxes::member_passes(
                m,
                feats,
                &proposals.boxes,
                &self.config.views,
                hw,
                self.config.delta,
                self.num_classes,
                self.config.boxes.nms == crate::config::BoxNms::PerClass,
            )?);
        }
        let merged = boxes::merge(&passes);
        let dets = boxes::select(&merged, &self.config.boxes, cell_type);
        Ok((merged, dets))
    }

    /// Merge point 3: every used member × view (or the identity view only) on the detections,
    /// the mean of the flipped-back probabilities.
    fn masks(
        &self,
        cache: &mut FeatureCache,
        used: &[usize],
        dets: &RawDetections,
        hw: (i64, i64),
    ) -> Result<Tensor> {
        if dets.boxes.size()[0] == 0 {
            return Ok(Tensor::zeros([0, 1, 1], (Kind::Float, dets.boxes.device())));
        }
        let views = if self.config.use_tta_masks {
            &self.config.views[..]
        } else {
            &self.config.views[..1]
        };
        let mut passes = Vec::new();
        for &i in used {
            let m = self.members[i].model;
            let all = cache.get(i, m)?;
            let only_identity;
            let feats = if views.len() == 1 {
                only_identity = identity(all);
                &only_identity
            } else {
                all
            };
            passes.extend(masks::member_passes(
                m,
                feats,
                &dets.boxes,
                &dets.labels,
                views,
                hw,
                self.config.delta,
            )?);
        }
        Ok(masks::merge(&passes))
    }
}

/// Each member's features of all views, computed on first use.
struct FeatureCache {
    views: Tensor,
    slots: Vec<Option<Features>>,
}

impl FeatureCache {
    fn get(&mut self, i: usize, model: &dyn TwoStageDetector) -> Result<&Features> {
        if self.slots[i].is_none() {
            self.slots[i] = Some(model.features(&self.views)?);
        }
        Ok(self.slots[i].as_ref().expect("filled above"))
    }
}

/// The identity view's features (batch index 0).
fn identity(f: &Features) -> Features {
    Features {
        levels: f.levels.iter().map(|l| l.narrow(0, 0, 1)).collect(),
        semantic: f.semantic.as_ref().map(|s| s.narrow(0, 0, 1)),
    }
}
