//! Test support shared by every crate's parity tests (feature `testing`): where the repository, the
//! real data and the project's Python are, running a committed `tools/` script, the edits with
//! which the fuzz tests mutate valid files ([`edited`]), the runner of every fuzz target
//! ([`fuzz`]) and their scratch folder ([`scratch_dir`]).
//!
//! Parity tests compare our numbers with independent references (pycocotools, torchvision, opencv,
//! …) computed at test time by the Python of `.venv`, which `make test` creates.

use std::cell::Cell;
use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::Command;

use proptest::strategy::Strategy;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

/// The repository root (this crate lives in `<root>/crates/cellseg-core`).
pub fn repo_root() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    here.canonicalize().unwrap_or(here)
}

/// The variable that turns every real-data skip into a failure (`.ci/run` sets it to `1`).
pub const REQUIRE_REALDATA: &str = "CELLSEG_REQUIRE_REALDATA";

/// `<root>/../shared/realdata`, or `None` when it is absent (the real data is on developer and CI
/// machines, not in a user's fresh clone) and the caller skips.
///
/// A skip is reported on the process's standard error, not through `eprintln!`, so that `cargo
/// test` shows it even for a test that passes (it captures only the print macros), with the name
/// of the test that skips.
///
/// # Panics
/// When the folder is absent and [`REQUIRE_REALDATA`] is `1`, with a message naming the folder.
pub fn realdata() -> Option<PathBuf> {
    let required = std::env::var_os(REQUIRE_REALDATA).is_some_and(|v| v == "1");
    realdata_at(repo_root().join("../shared/realdata"), required)
}

/// [`realdata`] for a given folder and requirement.
fn realdata_at(dir: PathBuf, required: bool) -> Option<PathBuf> {
    if dir.is_dir() {
        return Some(dir);
    }
    assert!(
        !required,
        "{} is absent and {REQUIRE_REALDATA}=1: the real-data tests need it (see its README)",
        dir.display()
    );
    report_skip(&format!(
        "{} is absent (real data is for developers and CI only; {REQUIRE_REALDATA}=1 makes this a \
         failure)",
        dir.display()
    ));
    None
}

/// Writes `SKIPPED <test>: <why>` straight to the process's standard error, past the test
/// harness's capture (libtest names each test's thread after the test).
pub fn report_skip(why: &str) {
    use std::io::Write;
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("a test");
    // Nothing useful can be done when stderr is closed.
    let _ = writeln!(std::io::stderr().lock(), "SKIPPED {test}: {why}");
}

/// `<root>/.venv/bin/python`.
///
/// # Panics
/// When `.venv` is missing, with a message saying to run `make test`.
pub fn venv_python() -> PathBuf {
    let python = repo_root().join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run `make test` (tools/setup_venv.sh creates .venv with torch, \
         torchvision, pycocotools, opencv, scipy, scikit-learn, timm)",
        python.display()
    );
    python
}

/// Runs `tools/<script> args…` with the Python of `.venv` and returns its standard output.
///
/// # Panics
/// When `.venv` is missing or the script fails (its stdout and stderr are in the message).
pub fn run_tool<S: AsRef<OsStr>>(script: &str, args: &[S]) -> String {
    let out = Command::new(venv_python())
        .arg(repo_root().join("tools").join(script))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run tools/{script}: {e}"));
    assert!(
        out.status.success(),
        "tools/{script} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The lock every test of a libtorch test binary holds while it builds, seeds, trains or runs a
/// model.
///
/// Each crate has one integration-test binary (linking libtorch once), and libtest runs its tests
/// on parallel threads, but libtorch's random generator and its intra-op thread count are
/// process-wide: a test that seeds the generator, or sets the thread count for bit-exact
/// results, would see another test's draws or setting. Holding this lock makes every such test
/// run as if alone; work that does not touch libtorch (a Python fixture, reading files) is done
/// before taking it, so it overlaps with other tests. A test that panics while holding the lock
/// does not fail the others (the poison is ignored).
pub fn torch_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One edit of a text file, for fuzzing parsers with mutations of a valid file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TextEdit {
    /// Replace the value of line `n % lines` (everything after its first `=` or `:`).
    Value(usize, String),
    /// Drop line `n % lines`.
    Drop(usize),
    /// Insert a line before line `n % lines`.
    Insert(usize, String),
    /// Cut the file at byte `n % (len + 1)` (after the line edits).
    Cut(usize),
    /// Set byte `n % len` to the value (after the line edits).
    Byte(usize, u8),
}

/// `valid` with `edits` applied: first the line edits in order, then the byte edits.
pub fn edited(valid: &str, edits: &[TextEdit]) -> Vec<u8> {
    let mut lines: Vec<String> = valid.lines().map(String::from).collect();
    for e in edits {
        let n = lines.len().max(1);
        match e {
            TextEdit::Value(i, v) => {
                if let Some(line) = lines.get_mut(i % n) {
                    if let Some(p) = line.find(['=', ':']) {
                        *line = format!("{} {v}", &line[..=p]);
                    }
                }
            }
            TextEdit::Drop(i) if !lines.is_empty() => {
                lines.remove(i % n);
            }
            TextEdit::Insert(i, l) => lines.insert(i % n, l.clone()),
            _ => {}
        }
    }
    let mut bytes = lines.join("\n").into_bytes();
    for e in edits {
        match *e {
            TextEdit::Cut(i) => bytes.truncate(i % (bytes.len() + 1)),
            TextEdit::Byte(i, b) if !bytes.is_empty() => {
                let n = bytes.len();
                bytes[i % n] = b;
            }
            _ => {}
        }
    }
    bytes
}

/// Runs the fuzz target `name`: `cases` inputs drawn from `input`, each given to `check`, which
/// fails the case with `prop_assert!` (or `Err`) when the code under test misbehaves and
/// otherwise returns whether the input was accepted (`Ok(true)`) or refused with a proper error
/// (`Ok(false)`). No failure persistence (CI machines are fresh). Afterwards asserts that every
/// case ran, prints `{name}: {cases} cases, {accepted} accepted` on standard error and returns
/// the number of accepted inputs (for targets that check their generator reaches deep enough).
///
/// # Panics
/// When a case fails (with proptest's minimal failing input) or fewer than `cases` cases ran.
pub fn fuzz<S: Strategy>(
    name: &str,
    cases: u32,
    input: &S,
    check: impl Fn(S::Value) -> Result<bool, TestCaseError>,
) -> u32 {
    let (ran, accepted) = (Cell::new(0u32), Cell::new(0u32));
    TestRunner::new(Config { cases, failure_persistence: None, ..Config::default() })
        .run(input, |value| {
            ran.set(ran.get() + 1);
            if check(value)? {
                accepted.set(accepted.get() + 1);
            }
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    // A passing run calls `check` once per case (a `prop_assume!` rejection would call it more).
    assert_eq!(ran.get(), cases, "{name}: not every case ran");
    let accepted = accepted.get();
    eprintln!("{name}: {cases} cases, {accepted} accepted");
    accepted
}

/// A scratch folder for fuzz cases that write files: in memory (`/dev/shm`) where there is one
/// (writing a file per case to a loaded disk costs milliseconds), else the system's temporary
/// folder. It is removed when dropped.
///
/// # Panics
/// When no temporary folder can be made.
pub fn scratch_dir() -> tempfile::TempDir {
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(dir) = tempfile::Builder::new().prefix("cellseg-fuzz").tempdir_in(shm) {
            return dir;
        }
    }
    tempfile::tempdir().unwrap_or_else(|e| panic!("cannot make a temporary folder: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_torch_lock_survives_a_test_that_panicked_holding_it() {
        let panicked = std::thread::spawn(|| {
            let _held = torch_lock();
            panic!("a failing test");
        })
        .join();
        assert!(panicked.is_err());
        drop(torch_lock());
    }

    #[test]
    fn edits_apply_lines_first_then_bytes() {
        let valid = "a = 1\nb = 2\nc = 3";
        let out = edited(
            valid,
            &[
                TextEdit::Value(1, "[]".into()),
                TextEdit::Drop(2),
                TextEdit::Insert(0, "z = 0".into()),
                TextEdit::Cut(18), // 18 % (18 + 1): the whole text
            ],
        );
        assert_eq!(String::from_utf8(out).unwrap(), "z = 0\na = 1\nb = []");
        assert_eq!(edited(valid, &[TextEdit::Cut(3), TextEdit::Byte(0, b'x')]), b"x =");
    }

    #[test]
    fn fuzz_runs_every_case_and_counts_the_accepted_ones() {
        let accepted = fuzz("even numbers", 200, &(0u32..10), |v| Ok(v % 2 == 0));
        // All 200 draws of one parity has probability 2⁻¹⁹⁹.
        assert!(0 < accepted && accepted < 200, "{accepted}");
        assert_eq!(fuzz("everything", 50, &(0u32..10), |_| Ok(true)), 50);
    }

    #[test]
    #[should_panic(expected = "small numbers: ")]
    fn fuzz_panics_with_the_target_name_when_a_case_fails() {
        fuzz("small numbers", 100, &(0u32..10), |v| {
            proptest::prop_assert!(v < 5, "{v} is not small");
            Ok(true)
        });
    }

    #[test]
    fn the_scratch_folder_exists_until_dropped() {
        let dir = scratch_dir();
        let path = dir.path().to_path_buf();
        std::fs::write(path.join("case"), b"x").unwrap();
        assert!(path.is_dir());
        drop(dir);
        assert!(!path.exists());
    }

    #[test]
    fn a_present_folder_is_returned_either_way() {
        let dir = repo_root();
        assert_eq!(realdata_at(dir.clone(), false), Some(dir.clone()));
        assert_eq!(realdata_at(dir.clone(), true), Some(dir));
    }

    #[test]
    fn an_absent_folder_skips_unless_required() {
        let missing = repo_root().join("no-such-realdata-folder");
        assert_eq!(realdata_at(missing.clone(), false), None);
        let msg = std::panic::catch_unwind(|| realdata_at(missing.clone(), true))
            .expect_err("required real data must fail");
        let msg = msg.downcast_ref::<String>().expect("a formatted message");
        assert!(msg.contains(&missing.display().to_string()), "{msg}");
        assert!(msg.contains(REQUIRE_REALDATA), "{msg}");
    }
}
