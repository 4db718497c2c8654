//! Compiles `csrc/c10d_shim.cpp` against the libtorch of `LIBTORCH` (the one tch links), with the
//! flags of `DISTRIBUTED.md`: C++17, the wheel's C++11 ABI, `USE_DISTRIBUTED`, and
//! `USE_C10D_GLOO` when Debian's libgloo-dev headers are installed. Without them the shim is built
//! without Gloo and every multi-process group is an error saying so (a one-process group works).

#[path = "../../build/libtorch_cc.rs"]
mod libtorch_cc;
#[path = "../../build/libtorch_link.rs"]
mod libtorch_link;

use std::path::{Path, PathBuf};

fn main() {
    libtorch_link::link_libtorch();
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-env-changed=CELLSEG_GLOO_INCLUDE");
    let Some(root) = libtorch_cc::libtorch_root() else {
        // libtorch_link has said what to do; the link of tch fails anyway.
        return;
    };
    let gloo_include = std::env::var_os("CELLSEG_GLOO_INCLUDE")
        .map_or_else(|| PathBuf::from("/usr/include"), PathBuf::from);
    let with_gloo = gloo_include.join("gloo/config.h").is_file();
    println!("cargo:rerun-if-changed={}", gloo_include.join("gloo/config.h").display());
    let mut build = libtorch_cc::cxx_build(&root, "csrc/c10d_shim.cpp");
    build.define("USE_DISTRIBUTED", None);
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
    libtorch_cc::link_torch_cpu(&root);
}
