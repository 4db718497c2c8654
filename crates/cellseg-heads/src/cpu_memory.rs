//! How a process keeps libtorch's freed CPU memory for the next tensor ([`retain_freed_memory`]).
//!
//! libtorch's CPU allocator takes every tensor from `malloc`. glibc serves a block above its
//! mmap threshold (at most 32 MiB by default) with a fresh `mmap` and returns it to the system
//! on `free`, so every large activation — the stride-1 stem's feature maps are about 100 MiB on a
//! 520×704 image — is page-faulted and zeroed by the kernel anew on every forward pass.
//! Measured on 2 cores with the seed's Cascade on one 520×704 image (`tools/bench_mmdet.sh`'s
//! weights): 15.9 s of inference with 29 s of system time as glibc ships, 8.7–10.1 s with 2–3.5 s
//! of system time once freed blocks are kept; peak resident memory 2.5 → 4.1 GiB.
//!
//! # Example
//! ```
//! // First thing in `main`, before any tensor is made.
//! cellseg_heads::cpu_memory::retain_freed_memory();
//! ```

/// Raises glibc's mmap threshold to 1 GiB and its trim threshold to 2 GiB for this process:
/// freed blocks stay in the heap and are reused without page faults, at the cost of a higher
/// resident peak. The examples (through `cellseg_cli::init_process`) and the benches call it; a
/// library never does behind its user's back. A no-op where the C library is not glibc; `false`
/// when glibc refused a value (or there is none).
pub fn retain_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: `mallopt` only sets allocator parameters; any value is accepted or refused
        // (return 0), and nothing is allocated or freed here.
        let mmap = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30) };
        let trim = unsafe { libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX) };
        let ok = mmap == 1 && trim == 1;
        tracing::debug!(ok, "glibc mmap threshold 1 GiB, trim threshold 2 GiB");
        ok
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn glibc_takes_both_thresholds() {
        assert!(super::retain_freed_memory());
    }
}
