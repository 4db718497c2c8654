//! The C ABI of `csrc/roi_align.cpp` (the CPU RoIAlign kernel), wrapped: the crate's only unsafe
//! code.

use std::ffi::{CStr, c_char, c_int};

use tch::{TchError, Tensor};

/// tch's tensor handle: an `at::Tensor*` (torch-sys `C_tensor`).
#[repr(C)]
struct CTensor {
    _private: [u8; 0],
}

unsafe extern "C" {
    fn ra_free_error(err: *mut c_char);
    #[allow(clippy::too_many_arguments)]
    fn ra_roi_align_levels(
        levels: *const *mut CTensor,
        n_levels: c_int,
        scales: *const f64,
        rois: *mut CTensor,
        level: *mut CTensor,
        p: i64,
        sampling_ratio: i64,
        aligned: c_int,
        out: *mut *mut CTensor,
        err: *mut *mut c_char,
    ) -> c_int;
}

/// RoIAlign of `rois` `[R, 5]` over `levels[level[r]]` (CPU, float32 / float64; `level`
/// int64 `[R]`): `[R, C, P, P]`, differentiable in the levels. libtorch's message on failure.
pub(crate) fn roi_align_levels(
    levels: &[&Tensor],
    scales: &[f64],
    rois: &Tensor,
    level: &Tensor,
    p: i64,
    sampling_ratio: i64,
    aligned: bool,
) -> Result<Tensor, TchError> {
    assert_eq!(levels.len(), scales.len(), "one scale per level");
    let ptrs: Vec<*mut CTensor> = levels.iter().map(|l| l.as_ptr() as *mut CTensor).collect();
    let mut out: *mut CTensor = std::ptr::null_mut();
    let mut err: *mut c_char = std::ptr::null_mut();
    // SAFETY: every pointer is a live `at::Tensor*` of tch (borrowed for the call); the shim
    // only reads them and returns a new `at::Tensor*` (owned by the `Tensor` made below) or a
    // malloc'd message.
    let rc = unsafe {
        ra_roi_align_levels(
            ptrs.as_ptr(),
            ptrs.len() as c_int,
            scales.as_ptr(),
            rois.as_ptr() as *mut CTensor,
            level.as_ptr() as *mut CTensor,
            p,
            sampling_ratio,
            c_int::from(aligned),
            &mut out,
            &mut err,
        )
    };
    if rc != 0 {
        let message = if err.is_null() {
            "roi_align: unknown error".to_string()
        } else {
            // SAFETY: a NUL-terminated malloc'd string, freed once here.
            let m = unsafe { CStr::from_ptr(err) }.to_string_lossy().into_owned();
            unsafe { ra_free_error(err) };
            m
        };
        return Err(TchError::Torch(message));
    }
    // SAFETY: `out` is a new heap `at::Tensor`, which tch frees on drop.
    Ok(unsafe { Tensor::from_ptr(out as *mut _) })
}
