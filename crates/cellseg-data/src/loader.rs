//! A deterministic, rayon-parallel, prefetching loader over shuffled epochs.
//!
//! Each epoch is a permutation of the sample indices drawn from `(seed, epoch)`; each sample's
//! augmentation randomness comes from `(seed, epoch, position)`. The batches are therefore the same
//! whatever the number of threads or the timing of the workers. A background thread builds the
//! batches (the samples of a batch in parallel on a rayon pool) and keeps up to `prefetch` of them
//! ready in a bounded channel.

use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, bounded};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::augment::Augment;
use crate::batch::Batch;
use crate::sample::SampleSource;
use crate::{Error, Result};

/// Loader settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoaderConfig {
    /// Images per batch (seed: `batch_size` of the training config; default 4).
    pub batch_size: usize,
    /// Seed of the shuffles and the augmentations (seed: 42).
    pub seed: u64,
    /// Shuffle each epoch (seed train loader: true).
    pub shuffle: bool,
    /// Drop the last incomplete batch (seed train loader: true).
    pub drop_last: bool,
    /// Batches built ahead of the consumer (default 2).
    pub prefetch: usize,
    /// Worker threads; 0 uses rayon's global pool (default 0).
    pub threads: usize,
    /// Pad batch images to a multiple of this (mmdet `Pad(size_divisor=32)`; default 32).
    pub size_divisor: usize,
}

impl Default for LoaderConfig {
    fn default() -> Self {
        Self {
            batch_size: 4,
            seed: 42,
            shuffle: true,
            drop_last: true,
            prefetch: 2,
            threads: 0,
            size_divisor: 32,
        }
    }
}

/// Batches of augmented samples.
pub struct Loader {
    source: Arc<dyn SampleSource>,
    augment: Option<Augment>,
    config: LoaderConfig,
    pool: Option<Arc<rayon::ThreadPool>>,
}

impl std::fmt::Debug for Loader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loader")
            .field("samples", &self.source.len())
            .field("augment", &self.augment)
            .field("config", &self.config)
            .finish()
    }
}

/// Mixes words into one 64-bit seed (SplitMix64 finaliser).
fn mix(words: &[u64]) -> u64 {
    let mut h = 0x9E37_79B9_7F4A_7C15u64;
    for &w in words {
        let mut z = h ^ w.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        h = z ^ (z >> 31);
    }
    h
}

impl Loader {
    /// A loader over `source`; `augment = None` yields the images as they are (validation).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a zero batch size.
    pub fn new(
        source: Arc<dyn SampleSource>,
        augment: Option<Augment>,
        config: LoaderConfig,
    ) -> Result<Self> {
        if config.batch_size == 0 {
            return Err(Error::InvalidConfig {
                key: "batch_size",
                value: "0".into(),
                reason: "must be > 0",
            });
        }
        let pool = if config.threads > 0 {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(config.threads)
                .thread_name(|i| format!("cellseg-loader-{i}"))
                .build()
                .map_err(|e| Error::InvalidConfig {
                    key: "threads",
                    value: format!("{} ({e})", config.threads),
                    reason: "cannot start the thread pool",
                })?;
            Some(Arc::new(pool))
        } else {
            None
        };
        Ok(Self { source, augment, config, pool })
    }

    /// The settings.
    pub fn config(&self) -> &LoaderConfig {
        &self.config
    }

    /// Batches in one epoch.
    pub fn batches_per_epoch(&self) -> usize {
        let (n, b) = (self.source.len(), self.config.batch_size);
        if self.config.drop_last { n / b } else { n.div_ceil(b) }
    }

    /// The sample order of `epoch`.
    pub fn order(&self, epoch: u64) -> Vec<usize> {
        let mut idx: Vec<usize> = (0..self.source.len()).collect();
        if self.config.shuffle {
            let mut rng = ChaCha8Rng::seed_from_u64(mix(&[self.config.seed, epoch, u64::MAX]));
            idx.shuffle(&mut rng);
        }
        idx
    }

    /// Iterates over the batches of `epoch`, built ahead in a background thread.
    pub fn epoch(&self, epoch: u64) -> EpochIter {
        let order = self.order(epoch);
        let batches: Vec<Vec<(usize, usize)>> = order
            .iter()
            .copied()
            .enumerate()
            .collect::<Vec<_>>()
            .chunks(self.config.batch_size)
            .filter(|c| !self.config.drop_last || c.len() == self.config.batch_size)
            .map(|c| c.to_vec())
            .collect();
        let (tx, rx) = bounded(self.config.prefetch.max(1));
        let source = Arc::clone(&self.source);
        let augment = self.augment.clone();
        let seed = self.config.seed;
        let divisor = self.config.size_divisor;
        let pool = self.pool.clone();
        let handle = std::thread::Builder::new()
            .name("cellseg-prefetch".into())
            .spawn(move || {
                for batch in batches {
                    let make = || -> Result<Batch> {
                        let samples = batch
                            .par_iter()
                            .map(|&(pos, index)| {
                                let s = source.load(index)?;
                                match &augment {
                                    Some(a) => {
                                        let mut rng = ChaCha8Rng::seed_from_u64(mix(&[
                                            seed, epoch, pos as u64,
                                        ]));
                                        a.apply(&s, &mut rng)
                                    }
                                    None => Ok(s),
                                }
                            })
                            .collect::<Result<Vec<_>>>()?;
                        Ok(Batch::collate(samples, divisor))
                    };
                    let out = match &pool {
                        Some(p) => p.install(make),
                        None => make(),
                    };
                    let failed = out.is_err();
                    if tx.send(out).is_err() || failed {
                        break;
                    }
                }
            })
            .expect("spawning the prefetch thread");
        EpochIter { rx: Some(rx), handle: Some(handle) }
    }
}

/// The batches of one epoch; an error ends the epoch.
pub struct EpochIter {
    rx: Option<Receiver<Result<Batch>>>,
    handle: Option<JoinHandle<()>>,
}

impl Iterator for EpochIter {
    type Item = Result<Batch>;
    fn next(&mut self) -> Option<Self::Item> {
        self.rx.as_ref()?.recv().ok()
    }
}

impl Drop for EpochIter {
    fn drop(&mut self) {
        // Closing the channel stops the producer at its next send.
        drop(self.rx.take());
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests;
