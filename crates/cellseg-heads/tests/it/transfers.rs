//! Host↔device transfers of one training step ([`cellseg_heads::transfers`]): what a GPU step
//! of each detector waits for, pinned so that a change that adds a synchronisation shows up here.
//! The step runs with RoIAlign built from libtorch ops ([`with_libtorch_ops`]), as on a GPU; the
//! CPU kernel makes none (its counts are pinned too: one upload and one download fewer per
//! extractor call, 2 in a Mask R-CNN step, 6 in Cascade, 12 in HTC).
//!
//! The counts do not depend on the data (as long as every image has a ground truth). A Cascade
//! step, 11 uploads: the GT boxes and labels once, one index upload per RoI extractor call (box
//! and mask branch of 3 stages), the mask-target inputs of 3 samplings, the RPN's kept
//! proposals; 17 downloads: the RPN sampler's counts, the RPN's NMS, one per RoI extractor call
//! (6), each sampling's counts and positives (3 × 2), the kept rows between stages (2), the loss
//! values. HTC samples twice per stage (interleaved) and adds the semantic target. Before
//! issue #27 the same step made 74 uploads and 51 downloads (Mask R-CNN 12 / 19, HTC 102 / 64):
//! the GT copied per sampling and per image, a `nonzero` per level and per grid size in every
//! RoIAlign, a `nonzero` per image for HTC's `allowed_border`, one download per loss value.

use cellseg_core::testing::torch_lock;
use cellseg_core::{BitMask, ImageSize, Instances};
use cellseg_heads::ops::roi_align::with_libtorch_ops;
use cellseg_heads::transfers::{TransferCounts, counts};
use cellseg_heads::{Arch, DetectorConfig};
use tch::{Device, Kind, Tensor, nn};

/// Two 96×96 images with `n` square cells each (the second image shifted).
fn batch(n: usize) -> (Tensor, Vec<Instances>) {
    let size = ImageSize::new(96, 96);
    let targets = (0..2)
        .map(|b| {
            let masks: Vec<BitMask> = (0..n)
                .map(|i| {
                    let mut m = BitMask::zeros(size);
                    let (r0, c0) = (8 + (i / 4) * 20 + b * 3, 8 + (i % 4) * 20);
                    for r in r0..r0 + 14 {
                        for c in c0..c0 + 12 {
                            m.set(r, c, true);
                        }
                    }
                    m
                })
                .collect();
            let boxes = masks.iter().map(|m| m.bbox().unwrap()).collect();
            let labels = (0..n).map(|i| i % 3).collect();
            Instances::new(size, boxes, labels, masks.iter().map(BitMask::to_cropped).collect())
                .unwrap()
        })
        .collect();
    (Tensor::randn([2, 3, 96, 96], (Kind::Float, Device::Cpu)), targets)
}

/// The transfers of one `losses` call and the reading of its values (the second call: the
/// first one fills the anchor cache).
fn step_transfers(arch: Arch) -> TransferCounts {
    tch::manual_seed(0);
    let cfg = DetectorConfig::tiny(8).to_arch(arch).unwrap();
    let vs = nn::VarStore::new(Device::Cpu);
    let model = cfg.build(&vs.root()).unwrap();
    let (images, targets) = batch(8);
    let _ = model.losses(&images, &targets).unwrap().values();
    let before = counts();
    let losses = model.losses(&images, &targets).unwrap();
    let values = losses.values();
    assert!(values.iter().all(|(_, v)| v.is_finite()), "{values:?}");
    counts() - before
}

#[test]
fn a_training_step_makes_the_pinned_number_of_transfers() {
    let _g = torch_lock();
    let archs = [Arch::MaskRcnn, Arch::Cascade, Arch::Htc];
    let got: Vec<(Arch, TransferCounts)> =
        with_libtorch_ops(|| archs.into_iter().map(|a| (a, step_transfers(a))).collect());
    let cpu: Vec<(Arch, TransferCounts)> =
        archs.into_iter().map(|a| (a, step_transfers(a))).collect();
    for ((arch, c), (_, k)) in got.iter().zip(&cpu) {
        println!(
            "{arch:?}: {} uploads, {} downloads per training step (batch of 2); with the CPU \
             RoIAlign kernel {} and {}",
            c.uploads, c.downloads, k.uploads, k.downloads
        );
    }
    let want = |uploads, downloads| TransferCounts { uploads, downloads };
    assert_eq!(
        got,
        vec![
            (Arch::MaskRcnn, want(5, 7)),
            (Arch::Cascade, want(11, 17)),
            (Arch::Htc, want(18, 27))
        ]
    );
    assert_eq!(
        cpu,
        vec![(Arch::MaskRcnn, want(3, 5)), (Arch::Cascade, want(5, 11)), (Arch::Htc, want(6, 15))]
    );
}
