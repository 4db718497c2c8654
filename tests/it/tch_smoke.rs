//! Smoke test of the libtorch set-up: the test binary finds libtorch with no environment variable,
//! creates a tensor, runs a convolution and reports the device. Runs on CPU in CI and on the GPU
//! machine when there is one.

use cellseg::core::testing::torch_lock;
use tch::{Device, Kind, Tensor};

#[test]
fn conv_runs_and_reports_device() {
    let _torch = torch_lock();
    let device = cellseg::best_device();
    eprintln!("{} -> running on {device:?}", cellseg::libtorch_report());
    tch::manual_seed(0);
    let x = Tensor::ones([1, 1, 5, 5], (Kind::Float, device));
    let w = Tensor::ones([2, 1, 3, 3], (Kind::Float, device));
    let y = x.conv2d(&w, None::<&Tensor>, [1, 1], [1, 1], [1, 1], 1);
    assert_eq!(y.size(), [1, 2, 5, 5]);
    // A 3x3 box filter of ones: 9 in the interior, 4 in the corners, 6 on the edges.
    let y = y.to_device(Device::Cpu);
    assert_eq!(y.double_value(&[0, 0, 2, 2]), 9.0);
    assert_eq!(y.double_value(&[0, 1, 0, 0]), 4.0);
    assert_eq!(y.double_value(&[0, 0, 0, 2]), 6.0);
}

#[test]
fn cuda_is_linked_when_libtorch_has_it() {
    // With CELLSEG_EXPECT_CUDA=1 (the GPU machine) it fails when the binary cannot see the GPU,
    // which is what happens when libtorch_cuda.so was dropped by the linker. Whenever CUDA is
    // visible, the best device is the GPU and a tensor made there lives there.
    let available = tch::Cuda::is_available();
    if std::env::var_os("CELLSEG_EXPECT_CUDA").is_some() {
        assert!(available, "CELLSEG_EXPECT_CUDA is set but CUDA is not available");
    }
    if available {
        assert_eq!(cellseg::best_device(), Device::Cuda(0), "CUDA is visible but not chosen");
        let x = Tensor::ones([2, 3], (Kind::Float, Device::Cuda(0)));
        assert_eq!(x.device(), Device::Cuda(0));
        assert_eq!((&x + &x).sum(Kind::Float).double_value(&[]), 12.0);
    } else {
        assert_eq!(cellseg::best_device(), Device::Cpu);
    }
}
