//! Forward time of each trunk + FPN on the CPU (or CUDA with `--cuda`), eval mode, no grad.
//!
//! `tools/bench_backbones.sh` runs this and `tools/backbones_bench.py` (PyTorch, same modules,
//! same input, same thread count) and prints both with the ratio. Run alone:
//!
//! ```text
//! cargo bench -p cellseg-backbones --bench backbones -- --size 256 --iters 5 --threads 2 resnet50
//! ```
//! Output: one line per trunk, `name<TAB>median_ms<TAB>min_ms`.

use std::time::Instant;

use cellseg_backbones::{Backbone, BackboneConfig, BackboneKind, Fpn, FpnConfig};
use tch::{Device, Kind, Tensor, nn};

struct Args {
    size: i64,
    iters: usize,
    threads: i32,
    stem_stride: i64,
    cuda: bool,
    kinds: Vec<BackboneKind>,
}

fn parse() -> Args {
    let mut a =
        Args { size: 256, iters: 5, threads: 2, stem_stride: 1, cuda: false, kinds: Vec::new() };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().expect("missing value").parse::<i64>().expect("not a number");
        match arg.as_str() {
            "--bench" => {}
            "--size" => a.size = value(),
            "--iters" => a.iters = value() as usize,
            "--threads" => a.threads = value() as i32,
            "--stem-stride" => a.stem_stride = value(),
            "--cuda" => a.cuda = true,
            name => a.kinds.push(
                *BackboneKind::ALL
                    .iter()
                    .find(|k| k.name() == name)
                    .unwrap_or_else(|| panic!("unknown backbone {name}")),
            ),
        }
    }
    if a.kinds.is_empty() {
        a.kinds = vec![BackboneKind::Resnet50, BackboneKind::TfEfficientnetB4];
    }
    a
}

fn main() {
    let a = parse();
    tch::set_num_threads(a.threads);
    let device = if a.cuda { Device::Cuda(0) } else { Device::Cpu };
    tch::manual_seed(0);
    for kind in &a.kinds {
        let vs = nn::VarStore::new(device);
        let cfg = BackboneConfig { stem_stride: a.stem_stride, ..BackboneConfig::new(*kind) };
        let backbone = cfg.build(&(vs.root() / "backbone")).expect("valid config");
        let fpn = Fpn::new(&(vs.root() / "neck"), &FpnConfig::default(), &backbone.out_shapes())
            .expect("valid FPN");
        let x = Tensor::randn([1, 3, a.size, a.size], (Kind::Float, device));
        let run = || {
            tch::no_grad(|| {
                let outs = fpn.forward(&backbone.forward(&x, false));
                if a.cuda {
                    tch::Cuda::synchronize(0);
                }
                outs
            })
        };
        let _ = run(); // warm-up
        let mut times: Vec<f64> = (0..a.iters)
            .map(|_| {
                let t = Instant::now();
                let _ = run();
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        times.sort_by(f64::total_cmp);
        println!("{}\t{:.2}\t{:.2}", kind.name(), times[times.len() / 2], times[0]);
    }
}
