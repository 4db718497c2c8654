//! The JSON-lines metrics log (`metrics.jsonl`): one record per step, validation and skipped step.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::checkpoint::write_atomic;
use crate::observer::{EvalRecord, NonFiniteStep, StepStats};
use crate::{Error, Result};

/// One line of `metrics.jsonl`, tagged by `"kind"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Record {
    /// An optimizer step.
    Step(StepStats),
    /// A validation.
    Eval(EvalRecord),
    /// A skipped step.
    NonFinite(NonFiniteStep),
}

impl Record {
    /// The optimizer step the record belongs to.
    pub fn step(&self) -> u64 {
        match self {
            Record::Step(s) => s.step,
            Record::Eval(e) => e.step,
            Record::NonFinite(n) => n.step,
        }
    }
}

/// An append-only JSON-lines file plus the records in memory (for the plot).
#[derive(Debug)]
pub struct MetricsLog {
    path: PathBuf,
    file: fs::File,
    records: Vec<Record>,
}

impl MetricsLog {
    /// Starts a fresh log at `path` (an existing one is replaced).
    ///
    /// # Errors
    /// [`Error::Io`] naming the file.
    pub fn create(path: &Path) -> Result<Self> {
        let file = fs::File::create(path).map_err(Error::io("creating", path))?;
        Ok(Self { path: path.to_path_buf(), file, records: Vec::new() })
    }

    /// Reopens the log of a resumed run, dropping the records after step `keep_until` (they
    /// belong to steps that will be run again).
    ///
    /// # Errors
    /// [`Error::Io`] naming the file; a line that is not a record is an [`Error::CheckpointState`].
    pub fn resume(path: &Path, keep_until: u64) -> Result<Self> {
        let mut records = Vec::new();
        if path.exists() {
            let f = fs::File::open(path).map_err(Error::io("reading", path))?;
            for (i, line) in BufReader::new(f).lines().enumerate() {
                let line = line.map_err(Error::io("reading", path))?;
                if line.trim().is_empty() {
                    continue;
                }
                match serde_json::from_str::<Record>(&line) {
                    Ok(r) if r.step() <= keep_until => records.push(r),
                    Ok(_) => {}
                    // A line cut by a crash mid-write can only be the last one.
                    Err(e) => {
                        tracing::warn!(path = %path.display(), line = i + 1, error = %e, "dropping unreadable metrics line")
                    }
                }
            }
        }
        let mut text = Vec::new();
        for r in &records {
            serde_json::to_writer(&mut text, r).expect("record is serialisable");
            text.push(b'\n');
        }
        write_atomic(path, &text)?;
        let file =
            fs::OpenOptions::new().append(true).open(path).map_err(Error::io("opening", path))?;
        Ok(Self { path: path.to_path_buf(), file, records })
    }

    /// Appends `record` (flushed, not fsynced).
    ///
    /// # Errors
    /// [`Error::Io`] naming the file (a full disk, for example).
    pub fn append(&mut self, record: Record) -> Result<()> {
        let mut line = serde_json::to_vec(&record).expect("record is serialisable");
        line.push(b'\n');
        self.file.write_all(&line).map_err(Error::io("writing", &self.path))?;
        self.file.flush().map_err(Error::io("writing", &self.path))?;
        self.records.push(record);
        Ok(())
    }

    /// Every record so far (including the resumed ones).
    pub fn records(&self) -> &[Record] {
        &self.records
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observer::EvalReport;

    fn step(n: u64) -> Record {
        Record::Step(StepStats {
            step: n,
            total_steps: 10,
            epoch: 1,
            epochs: 1,
            lr: 0.1,
            loss: 1.0 / n as f64,
            losses: Default::default(),
            grad_norm: 1.0,
            images_per_s: 1.0,
            elapsed_s: 0.0,
        })
    }

    #[test]
    fn resume_drops_records_after_the_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.jsonl");
        let mut log = MetricsLog::create(&path).unwrap();
        for n in 1..=5 {
            log.append(step(n)).unwrap();
        }
        let eval = EvalRecord { step: 5, epoch: 1, report: EvalReport::default(), is_best: true };
        log.append(Record::Eval(eval)).unwrap();
        drop(log);
        let mut text = fs::read_to_string(&path).unwrap();
        text.push_str("{\"kind\":\"st"); // a line cut by a crash
        fs::write(&path, text).unwrap();
        let log = MetricsLog::resume(&path, 3).unwrap();
        assert_eq!(log.records().len(), 3);
        let lines = fs::read_to_string(&path).unwrap();
        assert_eq!(lines.lines().count(), 3);
        assert!(lines.lines().all(|l| l.starts_with("{\"kind\":\"step\"")));
    }
}
