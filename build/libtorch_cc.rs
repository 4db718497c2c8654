//! The C++ side of the build scripts that compile a shim against libtorch (cellseg-heads'
//! RoIAlign, cellseg-dist's c10d): a `cc::Build` with libtorch's include directories and the
//! wheel's ABI, and the link of the libraries the shim calls. Included with `#[path]` next to
//! `libtorch_link.rs` by build scripts that have `cc` as a build dependency.

use std::path::PathBuf;

/// The canonical libtorch root named by `LIBTORCH`, or `None` (then `libtorch_link` has said
/// what to do, and the link of tch fails anyway).
pub fn libtorch_root() -> Option<PathBuf> {
    std::env::var_os("LIBTORCH").and_then(|p| std::fs::canonicalize(p).ok())
}

/// A C++17 build of `file` against the libtorch at `root` (C++11 ABI, as the wheel), warnings
/// off (libtorch's headers have many).
pub fn cxx_build(root: &std::path::Path, file: &str) -> cc::Build {
    println!("cargo:rerun-if-changed={file}");
    let include = root.join("include");
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .std("c++17")
        .file(file)
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .define("_GLIBCXX_USE_CXX11_ABI", "1")
        .warnings(false)
        .flag_if_supported("-w");
    build
}

/// Links the libtorch libraries a shim calls into (after `build.compile`).
pub fn link_torch_cpu(root: &std::path::Path) {
    println!("cargo:rustc-link-search=native={}", root.join("lib").display());
    println!("cargo:rustc-link-lib=dylib=torch_cpu");
    println!("cargo:rustc-link-lib=dylib=c10");
}
