//! Pairing out-of-fold predictions with their ground truth.

use std::collections::HashMap;
use std::path::Path;

use cellseg_core::CellType;
use cellseg_metrics::report::TruthImage;

use super::TweakImage;
use crate::{Error, Result, SoftDetections};

fn listed(ids: &[&str]) -> String {
    let mut s = ids.iter().take(10).copied().collect::<Vec<_>>().join(", ");
    if ids.len() > 10 {
        s.push_str(&format!(", … ({} more)", ids.len() - 10));
    }
    s
}

/// The OOF images paired with their truth ([`images_with_truth`]).
#[derive(Debug, Clone, PartialEq)]
pub struct OofWithTruth {
    /// Every OOF image with its truth, in OOF order.
    pub images: Vec<TweakImage>,
    /// Truth images the OOF does not hold, in truth order (left out).
    pub ignored_truth: Vec<String>,
}

/// Pairs each OOF image with its truth image (by id), in OOF order, under the rule the workspace's
/// tools share (`cellseg_metrics::report::truth_of_predicted`): the truth may hold more images
/// than the OOF (a full `train.csv`; they are left out and listed), every OOF image must have its
/// truth, with the same size. `oof_path` and `truth_path` name the files in errors.
///
/// # Errors
/// [`Error::OofTruth`] naming the OOF ids the truth lacks or the first image whose sizes differ.
pub fn images_with_truth(
    oof: Vec<(String, SoftDetections)>,
    truth: &[TruthImage],
    oof_path: &Path,
    truth_path: &Path,
) -> Result<OofWithTruth> {
    let fail = |message: String| Error::OofTruth {
        oof: oof_path.to_path_buf(),
        truth: truth_path.to_path_buf(),
        message,
    };
    let by_id: HashMap<&str, &TruthImage> = truth.iter().map(|t| (t.id.as_str(), t)).collect();
    let missing: Vec<&str> =
        oof.iter().map(|(id, _)| id.as_str()).filter(|id| !by_id.contains_key(id)).collect();
    if !missing.is_empty() {
        return Err(fail(format!(
            "{} OOF image id(s) are not in the truth: {}",
            missing.len(),
            listed(&missing)
        )));
    }
    let in_oof: std::collections::HashSet<&str> = oof.iter().map(|(id, _)| id.as_str()).collect();
    let ignored_truth: Vec<String> =
        truth.iter().filter(|t| !in_oof.contains(t.id.as_str())).map(|t| t.id.clone()).collect();
    let mut out = Vec::with_capacity(oof.len());
    for (id, detections) in oof {
        let t = by_id[id.as_str()];
        if t.size != detections.image_size {
            return Err(fail(format!(
                "image {id} is {}x{} in the OOF file but {}x{} in the truth",
                detections.image_size.height,
                detections.image_size.width,
                t.size.height,
                t.size.width
            )));
        }
        out.push(TweakImage {
            truth: t.masks.iter().map(|m| m.to_cropped()).collect(),
            truth_type: t.cell_type.parse::<CellType>().ok(),
            id,
            detections,
        });
    }
    Ok(OofWithTruth { images: out, ignored_truth })
}
