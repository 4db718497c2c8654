//! Where libtorch failures become [`Error`]s: the detectors' entry points ([`crate::TwoStageDetector::losses`],
//! [`crate::TwoStageDetector::predict`]) and the ensemble run their tensor work inside
//! [`guarded`].
//!
//! tch's infallible calls panic with the libtorch message when libtorch throws (out of memory, a
//! shape a kernel cannot take, a CUDA error). Inside [`guarded`] such a panic is caught and
//! becomes [`Error::OutOfMemory`] or [`Error::Libtorch`], naming the stage and the input's
//! shape, dtype and device; it is not printed (a panic hook installed on first use stays silent
//! for these panics on the guarding thread and hands every other panic to the previous hook). A
//! panic that is not a libtorch error — a broken invariant of this crate — keeps unwinding.
//!
//! Inputs that come from users (image batches, targets) are checked before any tensor work, so
//! their mistakes are [`Error::Shape`] / [`Error::Input`] / [`Error::Mismatch`], never a libtorch
//! message.
//!
//! # Example
//! ```
//! use cellseg_heads::{Error, libtorch::guarded};
//! use tch::{Device, Kind, Tensor};
//!
//! let a = Tensor::zeros([2, 3], (Kind::Float, Device::Cpu));
//! let err = guarded("example", &a, || -> Result<Tensor, Error> { Ok(a.matmul(&a)) }).unwrap_err();
//! assert!(matches!(err, Error::Libtorch { stage: "example", .. }), "{err}");
//! assert!(err.to_string().contains("[2, 3] Float on Cpu"));
//! ```

use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::Once;

use tch::Tensor;

use crate::{Error, Result};

/// Substrings by which libtorch (CPU allocator, CUDA caching allocator, cuBLAS / cuDNN) reports
/// that memory ran out.
const OUT_OF_MEMORY_MARKERS: [&str; 5] = [
    "out of memory",
    "can't allocate memory",
    "not enough memory",
    "CUBLAS_STATUS_ALLOC_FAILED",
    "CUDNN_STATUS_ALLOC_FAILED",
];

/// The prefix of the panic message of a tch call whose libtorch call failed (tch unwraps a
/// `TchError::Torch`).
const TCH_PANIC: &str = "Torch(\"";

thread_local! {
    /// Depth of [`guarded`] calls on this thread.
    static GUARDED: Cell<u32> = const { Cell::new(0) };
}

/// Whether a libtorch message says that memory ran out.
pub fn is_out_of_memory(message: &str) -> bool {
    OUT_OF_MEMORY_MARKERS.iter().any(|m| message.contains(m))
}

/// `[2, 3, 256, 256] Float on Cuda(0)`: what an error says about a tensor.
pub fn describe(t: &Tensor) -> String {
    if !t.defined() {
        return "an undefined tensor".into();
    }
    format!("{:?} {:?} on {:?}", t.size(), t.kind(), t.device())
}

/// The libtorch message in a panic payload of tch, if it is one.
fn libtorch_message(payload: &(dyn std::any::Any + Send)) -> Option<String> {
    let text = payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())?;
    let start = text.find(TCH_PANIC)? + TCH_PANIC.len();
    let body = &text[start..];
    let body = body.strip_suffix("\")").unwrap_or(body);
    // The Debug form escapes newlines and quotes; the first line is the useful one.
    let message = body.replace("\\n", "\n").replace("\\\"", "\"");
    Some(message.lines().next().unwrap_or_default().trim().to_string())
}

fn install_quiet_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let guarded = GUARDED.with(Cell::get) > 0;
            if guarded && libtorch_message(info.payload()).is_some() {
                return; // it becomes an `Error` in `guarded`
            }
            previous(info);
        }));
    });
}

/// Runs `f`, turning a libtorch failure inside it (a panicking tch call) into
/// [`Error::OutOfMemory`] or [`Error::Libtorch`] that name `stage` and `input` (its shape, dtype
/// and device). The error type may be any that holds this crate's (the ensemble's does).
///
/// # Errors
/// `f`'s own errors, and libtorch's as above.
///
/// # Panics
/// Re-raises a panic of `f` that is not a libtorch error.
pub fn guarded<T, E: From<Error>>(
    stage: &'static str,
    input: &Tensor,
    f: impl FnOnce() -> Result<T, E>,
) -> Result<T, E> {
    install_quiet_hook();
    GUARDED.with(|g| g.set(g.get() + 1));
    let outcome = catch_unwind(AssertUnwindSafe(f));
    GUARDED.with(|g| g.set(g.get() - 1));
    match outcome {
        Ok(result) => result,
        Err(payload) => match libtorch_message(payload.as_ref()) {
            Some(message) => Err(libtorch_error(stage, input, message).into()),
            None => resume_unwind(payload),
        },
    }
}

/// [`Error::OutOfMemory`] or [`Error::Libtorch`] for a libtorch `message` in `stage` on `input`
/// (for callers of tch's fallible `f_` functions).
pub fn libtorch_error(stage: &'static str, input: &Tensor, message: String) -> Error {
    let input = describe(input);
    let message = message.lines().next().unwrap_or_default().trim().to_string();
    if is_out_of_memory(&message) {
        tracing::warn!(stage, %input, %message, "out of memory");
        Error::OutOfMemory { stage, input, message }
    } else {
        Error::Libtorch { stage, input, message }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn the_cpu_allocators_real_message_is_out_of_memory() {
        let err = Tensor::f_empty([1 << 50], (Kind::Float, Device::Cpu)).unwrap_err();
        let tch::TchError::Torch(message) = &err else { panic!("{err:?}") };
        assert!(is_out_of_memory(message), "{message}");
    }

    #[test]
    fn cuda_and_cudnn_messages_are_out_of_memory() {
        // The texts of torch 2.11's CUDA caching allocator and of cuBLAS.
        for m in [
            "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 79.19 GiB",
            "CUDA error: out of memory",
            "CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`",
        ] {
            assert!(is_out_of_memory(m), "{m}");
        }
        assert!(!is_out_of_memory("mat1 and mat2 shapes cannot be multiplied (2x3 and 2x3)"));
    }

    #[test]
    fn an_allocation_that_cannot_succeed_is_a_typed_out_of_memory_error() {
        let input = Tensor::zeros([1, 3, 8, 8], (Kind::Float, Device::Cpu));
        let err = guarded("test stage", &input, || -> Result<Tensor> {
            Ok(Tensor::empty([1 << 50], (Kind::Float, Device::Cpu)))
        })
        .unwrap_err();
        match &err {
            Error::OutOfMemory { stage: "test stage", input, message } => {
                assert_eq!(input, "[1, 3, 8, 8] Float on Cpu");
                assert!(message.contains("allocate"), "{message}");
            }
            other => panic!("{other}"),
        }
        // The fallible call's error is classified the same way.
        let err = Tensor::f_empty([1 << 50], (Kind::Float, Device::Cpu)).unwrap_err();
        let tch::TchError::Torch(message) = err else { panic!("{err:?}") };
        let err = libtorch_error("test stage", &input, message);
        assert!(matches!(err, Error::OutOfMemory { .. }), "{err}");
    }

    #[test]
    fn a_shape_libtorch_rejects_is_a_typed_error_with_the_input() {
        let a = Tensor::zeros([2, 3], (Kind::Float, Device::Cpu));
        let err = guarded("matmul", &a, || -> Result<Tensor> { Ok(a.matmul(&a)) }).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::Libtorch { stage: "matmul", .. }), "{msg}");
        assert!(
            msg.contains("[2, 3] Float on Cpu") && msg.contains("cannot be multiplied"),
            "{msg}"
        );
        assert!(!msg.contains("Torch(\""), "{msg}");
    }

    #[test]
    fn other_panics_keep_unwinding() {
        let a = Tensor::zeros([1], (Kind::Float, Device::Cpu));
        let caught = catch_unwind(|| guarded("stage", &a, || -> Result<()> { panic!("a bug") }));
        let payload = caught.unwrap_err();
        assert_eq!(payload.downcast_ref::<&str>(), Some(&"a bug"));
        // The guard depth is back to zero.
        assert_eq!(GUARDED.with(Cell::get), 0);
    }
}
