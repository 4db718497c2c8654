//! Compiles `csrc/c10d_shim.cpp` against the libtorch of `LIBTORCH` (the one tch links), with the
//! flags of `DISTRIBUTED.md`: C++17, the wheel's C++11 ABI, `USE_DISTRIBUTED`, and
//! `USE_C10D_GLOO` when Debian's libgloo-dev headers are installed. Without them the shim is built
//! without Gloo and every multi-process group is an error saying so (a one-process group works).

#[path = "../../build/libtorch_link.rs"]
mod libtorch_link;

use std::path::{Path, PathBuf};

fn main() {
    libtorch_link::link_libtorch();
    println!("cargo:rerun-if-changed=csrc/c10d_shim.cpp");
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-env-changed=CELLSEG_GLOO_INCLUDE");
    let Some(root) = std::env::var_os("LIBTORCH").and_then(|p| std::fs::canonicalize(p).ok())
    else {
        // libtorch_link has said what to do; the link of tch fails anyway.
        return;
    };
    let include = root.join("include");
    let gloo_include = std::env::var_os("CELLSEG_GLOO_INCLUDE")
        .map_or_else(|| PathBuf::from("/usr/include"), PathBuf::from);
    let with_gloo = gloo_include.join("gloo/config.h").is_file();
    println!("cargo:rerun-if-changed={}", gloo_include.join("gloo/config.h").display());
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .std("c++17")
        .file("csrc/c10d_shim.cpp")
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .define("_GLIBCXX_USE_CXX11_ABI", "1")
        .define("USE_DISTRIBUTED", None)
        .warnings(false)
        .flag_if_supported("-w");
    if with_gloo {
        build
            .include(&gloo_include)
            .define("USE_C10D_GLOO", None)
            .define("CELLSEG_WITH_GLOO", None);
    } else {
        println!(
            "cargo:warning=libgloo-dev's headers are missing ({}): cellseg-dist is built without \
             Gloo, so groups of more than one process will fail; run `make setup` (apt-get \
             install libgloo-dev)",
            Path::new(&gloo_include).join("gloo").display()
        );
    }
    build.compile("cellseg_c10d_shim");
    println!("cargo:rustc-link-search=native={}", root.join("lib").display());
    println!("cargo:rustc-link-lib=dylib=torch_cpu");
    println!("cargo:rustc-link-lib=dylib=c10");
}
