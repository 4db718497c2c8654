//! Integration tests of the `cellseg` package (its examples' set-up and the whole inference
//! path), in one binary (each test binary links libtorch).
//!
//! Every test that seeds libtorch's process-wide generator or runs a model holds
//! [`cellseg::core::testing::torch_lock`].

// The training examples' run (crate cellseg-cli), by the names the tests use.
use cellseg_cli as support;
use cellseg_cli::train::{self as run, setup};

mod experiments;
mod infer_ensemble;
mod pretrain_livecell;
mod tch_smoke;
mod train_maskrcnn;

/// Copies the folder `from` to `to`, recursively.
fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let q = to.join(p.file_name().unwrap());
        if p.is_dir() { copy_dir(&p, &q) } else { std::fs::copy(&p, &q).map(|_| ()).unwrap() }
    }
}

/// `tools/backbones_fixtures.py pth-formats dir`: torch.save files of several kinds (see there).
fn support_pth_formats(dir: &std::path::Path) {
    cellseg::core::testing::run_tool(
        "backbones_fixtures.py",
        &["pth-formats", dir.to_str().unwrap()],
    );
}

/// Runs this test binary's `#[ignore]`d test `child` as the 2 ranks of a Gloo group on
/// 127.0.0.1 (torchrun's variables set, `env` added), and asserts that both succeed.
fn run_two_ranks(child: &str, env: (&str, &str)) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let ranks: Vec<std::process::Child> = (0..2)
        .map(|rank| {
            std::process::Command::new(std::env::current_exe().unwrap())
                .args(["--exact", child, "--ignored", "--nocapture"])
                .env(env.0, env.1)
                .env("RANK", rank.to_string())
                .env("WORLD_SIZE", "2")
                .env("MASTER_ADDR", "127.0.0.1")
                .env("MASTER_PORT", port.to_string())
                .env("CELLSEG_DIST_TIMEOUT", "120")
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (rank, c) in ranks.into_iter().enumerate() {
        let o = c.wait_with_output().unwrap();
        let text =
            format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        assert!(o.status.success(), "{child}, rank {rank}:\n{text}");
    }
}
