//! Integration tests of cellseg-train, in one binary (each test binary links libtorch).
//!
//! Every test that seeds libtorch's process-wide generator, sets its thread count or trains a
//! model holds [`cellseg_core::testing::torch_lock`]; the tests that need a process of their own
//! ([`kill_resume`], [`learning`]) re-run this binary on one of their `#[ignore]`d child tests.

mod cascade;
mod data_parallel;
mod detector;
mod engine;
mod fuzz;
mod kill_resume;
mod learning;
mod optim_parity;
mod toy;

use cellseg_backbones::{FpnConfig, TinyConfig};
use cellseg_heads::config::HeadsConfig;
use cellseg_train::detector::{Arch, DetectorConfig, Trunk};

/// The smallest detector of `arch` the engine tests train (3 classes, an 8–16-channel
/// [`Trunk::Tiny`], a 16-channel FPN, heads of 16–32 channels and a few dozen samples; class
/// agnostic boxes for the cascades, as the seed's): seconds per run on the CPU.
fn micro_detector(arch: Arch) -> DetectorConfig {
    let mut h = HeadsConfig { num_classes: 3, ..HeadsConfig::default() };
    h.rpn.feat_channels = 16;
    h.rpn.anchors.scales = vec![4.0];
    h.rpn.sampler.num = 64;
    h.rpn.train_proposals.nms_pre = 100;
    h.rpn.train_proposals.max_per_img = 50;
    h.rpn.test_proposals.nms_pre = 100;
    h.rpn.test_proposals.max_per_img = 50;
    h.bbox_head.fc_channels = 32;
    h.bbox_head.sampler.num = 32;
    h.bbox_head.reg_class_agnostic = arch != Arch::MaskRcnn;
    h.mask_head.conv_channels = 16;
    h.mask_head.num_convs = 1;
    h.htc.semantic_head.conv_channels = 16;
    h.htc.semantic_head.num_convs = 1;
    DetectorConfig {
        arch,
        trunk: Trunk::Tiny,
        tiny: TinyConfig { widths: [8, 16, 16, 16], ..TinyConfig::default() },
        neck: FpnConfig { out_channels: 16, num_outs: 5 },
        heads: h,
        ..DetectorConfig::default()
    }
}

/// The Mask R-CNN or Cascade architecture of `name` (the child processes' settings name it).
fn arch_named(name: &str) -> Arch {
    [Arch::MaskRcnn, Arch::Cascade]
        .into_iter()
        .find(|a| a.name() == name)
        .unwrap_or_else(|| panic!("unknown arch {name}"))
}
