//! Host↔device transfers of the heads, counted.
//!
//! On a GPU every copy between host and device memory, and every read of a device value on the
//! host, waits for the device: one synchronisation. The heads make such copies in a few places
//! only (the ground truths once per step, the sampler's candidate counts, the NMS bit masks, …),
//! and each of them goes through [`upload`], [`download`] or [`note_sync`] here, which count them
//! whatever the device (on the CPU the copy itself is free, but the count says what a GPU would
//! wait for). [`counts`] reads the counters, so a test can pin the number of synchronisations of a
//! training step and a change that adds one shows up. Not counted: [`crate::Features::to_device`],
//! which a caller asks for by name, and `to_device` on tensors already on that device (no copy).
//!
//! The counters are per thread: a step runs on one thread, and tests running side by side do not
//! see each other's transfers.

use std::cell::Cell;

use tch::{Device, Tensor};

thread_local! {
    static COUNTS: Cell<TransferCounts> = const { Cell::new(TransferCounts { uploads: 0, downloads: 0 }) };
}

/// Transfers made by this thread since it started (between two readings, by subtraction).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TransferCounts {
    /// Host-to-device copies.
    pub uploads: u64,
    /// Device-to-host copies and other reads that wait for the device (`nonzero`).
    pub downloads: u64,
}

impl std::ops::Sub for TransferCounts {
    type Output = TransferCounts;
    fn sub(self, rhs: Self) -> Self {
        TransferCounts {
            uploads: self.uploads - rhs.uploads,
            downloads: self.downloads - rhs.downloads,
        }
    }
}

/// This thread's counters now.
pub fn counts() -> TransferCounts {
    COUNTS.with(Cell::get)
}

fn add(uploads: u64, downloads: u64) {
    COUNTS.with(|c| {
        let n = c.get();
        c.set(TransferCounts { uploads: n.uploads + uploads, downloads: n.downloads + downloads });
    });
}

/// `host` (a CPU tensor built from host values) on `device`: one upload.
pub fn upload(host: &Tensor, device: Device) -> Tensor {
    add(1, 0);
    host.to_device(device)
}

/// `t` on the host: one download.
pub fn download(t: &Tensor) -> Tensor {
    add(0, 1);
    t.to_device(Device::Cpu)
}

/// Counts one synchronisation that is not a copy (`nonzero`, whose output size the host must
/// know).
pub fn note_sync() {
    add(0, 1);
}

/// `mask.nonzero()` as `[K]` positions: one synchronisation.
pub fn nonzero_positions(mask: &Tensor) -> Tensor {
    note_sync();
    mask.nonzero().view([-1])
}
