//! How binaries report errors: each cause once, and the exit code.
//!
//! The workspace's error enums put their cause's text into their own message and also return it
//! as `source`, so a plain walk of the chain would print it twice; [`error_report`] prints a cause
//! only when the line before does not already contain it.
//!
//! # Example
//! ```
//! use cellseg_core::exit::error_report;
//!
//! #[derive(Debug)]
//! struct Outer(std::io::Error);
//! impl std::fmt::Display for Outer {
//!     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
//!         write!(f, "cannot read a.toml: {}", self.0)
//!     }
//! }
//! impl std::error::Error for Outer {
//!     fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
//!         Some(&self.0)
//!     }
//! }
//! let e = Outer(std::io::Error::new(std::io::ErrorKind::NotFound, "No such file"));
//! assert_eq!(error_report(&e), "cannot read a.toml: No such file");
//! ```

/// The message of `err` and then each cause that the line before does not already contain, one
/// per line (`  caused by: …`).
pub fn error_report(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut last = out.clone();
    let mut cause = err.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !last.contains(&text) {
            out.push_str("\n  caused by: ");
            out.push_str(&text);
        }
        last = text;
        cause = c.source();
    }
    out
}

/// The exit of a binary's `main`: success, or the error printed to stderr with [`error_report`]
/// (prefixed `error: `) and exit code 1.
pub fn exit_code<E: AsRef<dyn std::error::Error>>(result: Result<(), E>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", error_report(e.as_ref()));
            std::process::ExitCode::FAILURE
        }
    }
}
