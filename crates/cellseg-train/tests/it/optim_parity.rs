//! AdamW / SGD / clipping / LR schedules against torch, computed at test time by
//! `tools/train_optim_reference.py` (constants mirrored from there).

use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};

use cellseg_train::{
    LrSchedule, Optimizer, OptimizerConfig, OptimizerKind, ScheduleConfig, ScheduleHorizon,
    ScheduleKind, clip_grad_norm,
};
use tch::Tensor;

const NAMES: [&str; 5] =
    ["layer1.weight", "layer1.bias", "bn1.weight", "head.weight", "head.norm.bias"];
const STEPS: usize = 6;

/// Runs the reference script once per test process (importing torch is the slow part) and reads
/// its tensors.
fn reference() -> BTreeMap<String, Tensor> {
    static REFERENCE: OnceLock<Mutex<BTreeMap<String, Tensor>>> = OnceLock::new();
    let cell = REFERENCE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        cellseg_core::testing::run_tool("train_optim_reference.py", &[dir.path()]);
        let path = dir.path().join("optim_reference.safetensors");
        Mutex::new(Tensor::read_safetensors(path).unwrap().into_iter().collect())
    });
    // Tensors are not Sync; the tests only read copies made under the lock.
    let guard = cell.lock().unwrap_or_else(|e| e.into_inner());
    guard.iter().map(|(k, v)| (k.clone(), v.copy())).collect()
}

struct Case {
    name: &'static str,
    kind: OptimizerKind,
    lr: f64,
    weight_decay: f64,
    betas: [f64; 2],
    sgd: (f64, f64, bool),
    schedule: ScheduleKind,
    warmup_prop: f64,
    horizon: u64,
    clip: Option<f64>,
}

const CASES: [Case; 4] = [
    Case {
        name: "adamw",
        kind: OptimizerKind::Adamw,
        lr: 1e-2,
        weight_decay: 0.05,
        betas: [0.9, 0.99],
        sgd: (0.0, 0.0, false),
        schedule: ScheduleKind::Linear,
        warmup_prop: 0.25,
        horizon: 8,
        clip: Some(10.0),
    },
    Case {
        name: "adamw_seed_wd0",
        kind: OptimizerKind::Adamw,
        lr: 1e-2,
        weight_decay: 0.0,
        betas: [0.9, 0.999],
        sgd: (0.0, 0.0, false),
        schedule: ScheduleKind::Linear,
        warmup_prop: 0.05,
        horizon: 8,
        clip: Some(10.0),
    },
    Case {
        name: "sgd_nesterov",
        kind: OptimizerKind::Sgd,
        lr: 5e-2,
        weight_decay: 1e-3,
        betas: [0.9, 0.999],
        sgd: (0.9, 0.0, true),
        schedule: ScheduleKind::Cosine,
        warmup_prop: 0.3,
        horizon: 7,
        clip: Some(10.0),
    },
    Case {
        name: "sgd_dampening",
        kind: OptimizerKind::Sgd,
        lr: 5e-2,
        weight_decay: 1e-2,
        betas: [0.9, 0.999],
        sgd: (0.8, 0.1, false),
        schedule: ScheduleKind::Constant,
        warmup_prop: 0.0,
        horizon: 6,
        clip: None,
    },
];

fn max_rel_diff(a: &Tensor, b: &Tensor) -> f64 {
    let d = (a - b).abs().max().double_value(&[]);
    d / b.abs().max().double_value(&[]).max(1e-12)
}

#[test]
fn optim_matches_torch() {
    let r = &reference();
    for case in &CASES {
        let mut cfg =
            OptimizerConfig { kind: case.kind, lr: case.lr, ..OptimizerConfig::default() };
        if case.name == "adamw_seed_wd0" {
            // The seed's behaviour: weight_decay configured but never applied (SEED.md §9.12).
            cfg.weight_decay = 0.01;
            cfg.seed_ignores_weight_decay = true;
        } else {
            cfg.weight_decay = case.weight_decay;
        }
        cfg.adamw.betas = case.betas;
        (cfg.sgd.momentum, cfg.sgd.dampening, cfg.sgd.nesterov) = case.sgd;
        cfg.clip_grad_norm = case.clip;
        let params: Vec<(String, Tensor)> = NAMES
            .iter()
            .map(|n| (n.to_string(), r[&format!("init/{n}")].copy().set_requires_grad(true)))
            .collect();
        let vars: Vec<Tensor> = params.iter().map(|(_, t)| t.shallow_clone()).collect();
        let mut opt = Optimizer::new(&cfg, params);
        let sched_cfg = ScheduleConfig {
            kind: case.schedule,
            warmup_prop: case.warmup_prop,
            horizon: ScheduleHorizon::Steps,
        };
        let schedule = LrSchedule::new(&sched_cfg, case.lr, case.horizon);
        let want_lr = Vec::<f64>::try_from(&r[&format!("lr/{}", case.name)]).unwrap();
        let want_norm = Vec::<f64>::try_from(&r[&format!("norm/{}", case.name)]).unwrap();
        for step in 0..STEPS {
            let mut grads: Vec<Option<Tensor>> = NAMES
                .iter()
                .map(|n| r.get(&format!("grad/{step}/{n}")).map(|g| g.copy()))
                .collect();
            let norm = clip_grad_norm(&mut grads, cfg.clip_grad_norm);
            assert!(
                (norm - want_norm[step]).abs() <= 1e-5 * want_norm[step],
                "{} step {step}: norm {norm} vs {}",
                case.name,
                want_norm[step]
            );
            let lr = schedule.lr(step as u64);
            assert!(
                (lr - want_lr[step]).abs() <= 1e-15,
                "{} step {step}: lr {lr} vs {}",
                case.name,
                want_lr[step]
            );
            opt.step(&grads, lr);
        }
        let mut worst = 0.0f64;
        for (n, v) in NAMES.iter().zip(&vars) {
            let want = &r[&format!("case/{}/{n}", case.name)];
            let init = &r[&format!("init/{n}")];
            let moved = (want - init).abs().max().double_value(&[]);
            assert!(moved > 1e-4, "{} {n}: the reference did not move ({moved})", case.name);
            let d = max_rel_diff(v, want);
            worst = worst.max(d);
            assert!(
                d < 2e-6,
                "{} {n}: max relative difference {d}\nours {v}\ntorch {want}",
                case.name
            );
        }
        eprintln!(
            "{}: max relative difference to torch over all parameters {worst:.2e}",
            case.name
        );
    }
}

#[test]
fn schedules_match_transformers_formulas_stepped_per_batch() {
    let r = &reference();
    for (kind, key) in [
        (ScheduleKind::Linear, "linear"),
        (ScheduleKind::Cosine, "cosine"),
        (ScheduleKind::Constant, "constant"),
    ] {
        let cfg = ScheduleConfig { kind, warmup_prop: 0.1, horizon: ScheduleHorizon::Steps };
        let s = LrSchedule::new(&cfg, 2e-4, 37);
        assert_eq!(s.warmup_steps, 3);
        let want = Vec::<f64>::try_from(&r[&format!("sched/{key}")]).unwrap();
        assert_eq!(want.len(), 45);
        for (step, w) in want.iter().enumerate() {
            let got = s.lr(step as u64);
            assert!((got - w).abs() <= 1e-15 + 1e-12 * w.abs(), "{key} step {step}: {got} vs {w}");
        }
    }
}
