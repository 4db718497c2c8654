//! Links libtorch as every tch package does (`build/libtorch_link.rs`) and compiles
//! `csrc/roi_align.cpp`, the CPU RoIAlign kernel (forward and backward, an autograd function),
//! against the libtorch of `LIBTORCH` (the one tch links).

#[path = "../../build/libtorch_cc.rs"]
mod libtorch_cc;
#[path = "../../build/libtorch_link.rs"]
mod libtorch_link;

fn main() {
    libtorch_link::link_libtorch();
    let Some(root) = libtorch_cc::libtorch_root() else {
        return;
    };
    libtorch_cc::cxx_build(&root, "csrc/roi_align.cpp").opt_level(3).compile("cellseg_roi_align");
    libtorch_cc::link_torch_cpu(&root);
}
