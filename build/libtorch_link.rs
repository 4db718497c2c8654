//! Build script shared by every package that links `tch` (included with `build = "…"` or
//! `include!`): it makes binaries, tests, examples and benches find libtorch at run time, and links
//! `libtorch_cuda.so` for real so that a binary built on a CPU machine uses a GPU where there is one.
//!
//! - rpath: the canonical `$LIBTORCH/lib` (`.cargo/config.toml` sets `LIBTORCH` to `.libtorch`, a
//!   symlink into `.venv`). `LD_LIBRARY_PATH` still wins over it, which is how the GPU machine runs
//!   our binaries against its own torch.
//! - CUDA: with the default `--as-needed`, nothing references `libtorch_cuda.so` directly, so the
//!   linker drops it and libtorch never registers its CUDA kernels. It is linked with
//!   `--no-as-needed` when it exists.

use std::path::PathBuf;

#[allow(dead_code)] // the entry point when this file is a package's build script
fn main() {
    link_libtorch();
}

/// The rpath and the CUDA link described above (also called by build scripts that include this
/// file, such as cellseg-dist's).
pub fn link_libtorch() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    let Some(libtorch) = std::env::var_os("LIBTORCH") else {
        println!("cargo:warning=LIBTORCH is not set; run tools/setup_venv.sh (make test does)");
        return;
    };
    let Ok(root) = std::fs::canonicalize(PathBuf::from(libtorch)) else {
        println!("cargo:warning=LIBTORCH does not exist; run tools/setup_venv.sh (make test does)");
        return;
    };
    let lib = root.join("lib");
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    if lib.join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-L{}", lib.display());
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-ltorch_cuda");
        println!("cargo:rustc-link-arg=-Wl,--as-needed");
    }
}
