//! Our side of `tools/bench_mmdet.sh`: the seed's detector (`mask_rcnn` / `cascade` / `htc`:
//! `DetectorConfig::default()` with 8 classes, `configs/cascade.toml`, `configs/htc.toml`) with the
//! calibrated weights that `tools/mmdet_bench.py` wrote (loaded strictly), timed in inference on
//! its 520×704 image (`predict`: detections with pasted soft masks) and in one SGD training step
//! (lr 1e-3, momentum 0.9, as the Python side) on its batch of two 256×256 crops.
//!
//! Usage: `bench_mmdet MODEL DIR` (MODEL: maskrcnn, cascade, htc). Env: `ITERS` (3), `WARMUP`
//! (1), `THREADS` (2), `ROI_ALIGN` (`ops`: RoIAlign from libtorch ops instead of the CPU kernel),
//! `PHASE` (`infer` / `train`: only that one, e.g. under `perf record`; the other prints 0),
//! `MALLOC` (`default`: glibc as it ships, without [`retain_freed_memory`]).
//!
//! [`retain_freed_memory`]: cellseg_heads::cpu_memory::retain_freed_memory
//! Prints `RESULT cellseg model=… infer_ms=… detections=… train_ms=…` (medians).

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use cellseg_backbones::checkpoint::{self, LoadPolicy};
use cellseg_core::{BitMask, BoxXyxy, ImageSize, Instances};
use cellseg_heads::{Arch, DetectorConfig};
use tch::{Device, Tensor, nn, nn::OptimizerConfig};

fn env(key: &str, default: usize) -> usize {
    std::env::var(key).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Median milliseconds of `f` over `iters` runs after `warmup`, and its last result.
fn timed<T>(iters: usize, warmup: usize, mut f: impl FnMut() -> T) -> (f64, T) {
    let mut t = Vec::new();
    let mut out = None;
    for i in 0..warmup + iters.max(1) {
        let t0 = Instant::now();
        out = Some(f());
        if i >= warmup {
            t.push(1e3 * t0.elapsed().as_secs_f64());
        }
    }
    t.sort_by(f64::total_cmp);
    (t[t.len() / 2], out.expect("at least one run"))
}

/// Image `b`'s ground truth from `inputs.safetensors`.
fn targets(t: &HashMap<String, Tensor>, b: usize, size: ImageSize) -> anyhow::Result<Instances> {
    let get = |k: String| t.get(&k).with_context(|| format!("inputs.safetensors has no {k}"));
    let boxes = Vec::<f32>::try_from(get(format!("gt_boxes_{b}"))?.reshape([-1]))?;
    let boxes: Vec<BoxXyxy> =
        boxes.chunks(4).map(|c| BoxXyxy::new(c[0], c[1], c[2], c[3])).collect();
    let labels = Vec::<i64>::try_from(get(format!("gt_labels_{b}"))?)?;
    let m = get(format!("gt_masks_{b}"))?;
    let masks = (0..m.size()[0])
        .map(|i| {
            let data = Vec::<u8>::try_from(m.get(i).reshape([-1]))?;
            Ok(BitMask::from_vec(size, data)?.to_cropped())
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let labels = labels.into_iter().map(|l| l as usize).collect();
    Ok(Instances::new(size, boxes, labels, masks)?)
}

fn main() -> anyhow::Result<()> {
    if std::env::var("MALLOC").as_deref() != Ok("default") {
        cellseg_heads::cpu_memory::retain_freed_memory();
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [model_name, dir] = args.as_slice() else {
        anyhow::bail!("usage: bench_mmdet MODEL DIR (MODEL: maskrcnn, cascade, htc)");
    };
    if std::env::var("ROI_ALIGN").as_deref() == Ok("ops") {
        return cellseg_heads::ops::roi_align::with_libtorch_ops(|| {
            run(model_name, Path::new(dir))
        });
    }
    run(model_name, Path::new(dir))
}

fn run(model_name: &str, dir: &Path) -> anyhow::Result<()> {
    let iters = env("ITERS", 3);
    let warmup = env("WARMUP", 1);
    tch::set_num_threads(env("THREADS", 2) as i32);
    let configs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
    let cfg = match model_name {
        "maskrcnn" => {
            let mut cfg = DetectorConfig::default();
            cfg.heads.num_classes = 8;
            cfg
        }
        "cascade" => DetectorConfig::from_toml(configs.join("cascade.toml"))?,
        "htc" => DetectorConfig::from_toml(configs.join("htc.toml"))?,
        other => anyhow::bail!("MODEL must be maskrcnn, cascade or htc, not {other:?}"),
    };
    assert_eq!(cfg.arch == Arch::MaskRcnn, model_name == "maskrcnn");
    let vs = nn::VarStore::new(Device::Cpu);
    let model = cfg.build(&vs.root())?;
    let report = checkpoint::load(&vs, dir.join("weights.safetensors"), &LoadPolicy::default())?;
    anyhow::ensure!(
        report.missing.is_empty() && report.unexpected.is_empty() && report.dropped.is_empty(),
        "the load of mmdet's weights is not strict: {report:?}"
    );
    let t: HashMap<String, Tensor> =
        Tensor::read_safetensors(dir.join("inputs.safetensors"))?.into_iter().collect();
    let phase = std::env::var("PHASE").unwrap_or_default();
    let (mut infer_ms, mut detections, mut train_ms, mut loss) = (0.0, 0, 0.0, 0.0);
    let image = &t["infer_image"];
    if phase != "train" {
        let (ms, dets) = timed(iters, warmup, || model.predict(image, &[ImageSize::new(520, 704)]));
        (infer_ms, detections) = (ms, dets?[0].boxes.len());
    }

    let crop = ImageSize::new(256, 256);
    let batch = [targets(&t, 0, crop)?, targets(&t, 1, crop)?];
    let images = &t["train_images"];
    let mut opt = nn::Sgd { momentum: 0.9, ..Default::default() }.build(&vs, 1e-3)?;
    if phase != "infer" {
        let (ms, last) = timed(iters, warmup, || -> anyhow::Result<f64> {
            let losses = model.losses(images, &batch)?;
            let total = losses.total();
            opt.backward_step(&total);
            Ok(f64::try_from(&total)?)
        });
        (train_ms, loss) = (ms, last?);
    }
    println!(
        "cellseg {model_name}: inference {infer_ms:.1} ms ({detections} detections), train step \
         {train_ms:.1} ms (loss {loss:.4})"
    );
    println!(
        "RESULT cellseg model={model_name} infer_ms={infer_ms:.3} detections={detections} \
         train_ms={train_ms:.3}"
    );
    Ok(())
}
