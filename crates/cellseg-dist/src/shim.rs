//! The C ABI of `csrc/c10d_shim.cpp`, wrapped: each call returns the shim's error message.

use std::ffi::{CStr, CString, c_char, c_int};

/// The shim's group (a `TCPStore` and a `ProcessGroupGloo`).
#[repr(C)]
pub(crate) struct CdGroup {
    _private: [u8; 0],
}

unsafe extern "C" {
    fn cd_with_gloo() -> c_int;
    fn cd_free_error(err: *mut c_char);
    fn cd_group_new(
        master_addr: *const c_char,
        port: u16,
        rank: c_int,
        world: c_int,
        timeout_ms: i64,
        threads: c_int,
        interface: *const c_char,
        err: *mut *mut c_char,
    ) -> *mut CdGroup;
    fn cd_group_free(group: *mut CdGroup);
    fn cd_all_reduce(
        group: *mut CdGroup,
        tensor: *mut torch_sys_tensor::CTensor,
        op: c_int,
        err: *mut *mut c_char,
    ) -> c_int;
    fn cd_broadcast(
        group: *mut CdGroup,
        tensor: *mut torch_sys_tensor::CTensor,
        root: c_int,
        err: *mut *mut c_char,
    ) -> c_int;
    fn cd_barrier(group: *mut CdGroup, err: *mut *mut c_char) -> c_int;
}

/// tch's tensor handle: an `at::Tensor*` (torch-sys `C_tensor`).
mod torch_sys_tensor {
    #[repr(C)]
    pub(crate) struct CTensor {
        _private: [u8; 0],
    }
}

/// The message the shim wrote into `err` (and frees it).
fn take_error(err: *mut c_char) -> String {
    if err.is_null() {
        return "unknown error (no message)".into();
    }
    // SAFETY: the shim writes a NUL-terminated malloc'd string, freed once here.
    let msg = unsafe { CStr::from_ptr(err) }.to_string_lossy().into_owned();
    unsafe { cd_free_error(err) };
    msg
}

/// Whether the shim was built with Gloo.
pub(crate) fn with_gloo() -> bool {
    // SAFETY: no arguments, no state.
    unsafe { cd_with_gloo() == 1 }
}

/// An owned shim group, freed on drop.
pub(crate) struct Group(*mut CdGroup);

// SAFETY: c10d's process groups are used from any thread (one collective at a time, which
// `ProcessGroup`'s `&self` methods do not interleave from one thread; the Gloo group itself is
// thread-safe).
unsafe impl Send for Group {}
unsafe impl Sync for Group {}

impl Drop for Group {
    fn drop(&mut self) {
        // SAFETY: made by cd_group_new, freed once.
        unsafe { cd_group_free(self.0) }
    }
}

impl Group {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        addr: &str,
        port: u16,
        rank: usize,
        world: usize,
        timeout_ms: i64,
        threads: usize,
        interface: &str,
    ) -> Result<Self, String> {
        let addr = CString::new(addr).map_err(|_| "the address holds a NUL byte".to_string())?;
        let interface =
            CString::new(interface).map_err(|_| "the interface holds a NUL byte".to_string())?;
        let mut err: *mut c_char = std::ptr::null_mut();
        // SAFETY: valid C strings that outlive the call; `err` is written only on failure.
        let g = unsafe {
            cd_group_new(
                addr.as_ptr(),
                port,
                rank as c_int,
                world as c_int,
                timeout_ms,
                threads as c_int,
                interface.as_ptr(),
                &mut err,
            )
        };
        if g.is_null() { Err(take_error(err)) } else { Ok(Self(g)) }
    }

    /// In-place all-reduce of one dense tensor (`mean`: the average, else the sum).
    pub(crate) fn all_reduce(&self, t: &tch::Tensor, mean: bool) -> Result<(), String> {
        let mut err: *mut c_char = std::ptr::null_mut();
        // SAFETY: `t.as_ptr()` is tch's live `at::Tensor*`; the shim reduces into its storage.
        let rc =
            unsafe { cd_all_reduce(self.0, t.as_ptr() as *mut _, c_int::from(mean), &mut err) };
        if rc == 0 { Ok(()) } else { Err(take_error(err)) }
    }

    /// In-place broadcast of one dense tensor from `root`.
    pub(crate) fn broadcast(&self, t: &tch::Tensor, root: usize) -> Result<(), String> {
        let mut err: *mut c_char = std::ptr::null_mut();
        // SAFETY: as in `all_reduce`.
        let rc = unsafe { cd_broadcast(self.0, t.as_ptr() as *mut _, root as c_int, &mut err) };
        if rc == 0 { Ok(()) } else { Err(take_error(err)) }
    }

    /// A barrier over the group.
    pub(crate) fn barrier(&self) -> Result<(), String> {
        let mut err: *mut c_char = std::ptr::null_mut();
        // SAFETY: a live group.
        let rc = unsafe { cd_barrier(self.0, &mut err) };
        if rc == 0 { Ok(()) } else { Err(take_error(err)) }
    }
}
