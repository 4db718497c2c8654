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

/// Pairs each OOF image with its truth image (by id), in OOF order. Both sides must hold the same
/// ids with the same image sizes; `oof_path` and `truth_path` name the files in errors.
///
/// # Errors
/// [`Error::OofTruth`] naming the ids found on one side only (OOF ids missing from the truth are
/// reported first) or the first image whose sizes differ.
pub fn images_with_truth(
    oof: Vec<(String, SoftDetections)>,
    truth: &[TruthImage],
    oof_path: &Path,
    truth_path: &Path,
) -> Result<Vec<TweakImage>> {
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
    let unpredicted: Vec<&str> =
        truth.iter().map(|t| t.id.as_str()).filter(|id| !in_oof.contains(id)).collect();
    if !unpredicted.is_empty() {
        return Err(fail(format!(
            "{} truth image id(s) have no OOF predictions: {}",
            unpredicted.len(),
            listed(&unpredicted)
        )));
    }
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
    Ok(out)
}
