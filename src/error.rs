//! The library's error type. Every variant names the file, row, column or key it concerns, so that a message
//! explains itself without a backtrace.

use std::path::{Path, PathBuf};

/// Result alias used throughout the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in chexlab's library code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O operation on a file failed (missing, unreadable, not writable, ...).
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The CSV layer could not read a record (bad UTF-8, wrong number of fields, ...).
    #[error("{}: line {line}: {message}", path.display())]
    Csv {
        path: PathBuf,
        line: u64,
        message: String,
    },

    /// A label cell holds something other than `1`, `1.0`, `0`, `0.0`, `-1`, `-1.0` or empty.
    #[error(
        "{}: line {line}, column '{column}': invalid label value '{value}' \
         (expected 1, 1.0, 0, 0.0, -1, -1.0 or empty)",
        path.display()
    )]
    LabelValue {
        path: PathBuf,
        line: u64,
        column: String,
        value: String,
    },

    /// A record is well-formed CSV but its content is wrong (bad id, bad path, unknown split, ...).
    #[error("{}: line {line}: {message}", path.display())]
    Record {
        path: PathBuf,
        line: u64,
        message: String,
    },

    /// Required columns are absent from a CSV header.
    #[error("{}: missing column(s) {}; header has: {}", path.display(), missing.join(", "), found.join(", "))]
    MissingColumns {
        path: PathBuf,
        missing: Vec<String>,
        found: Vec<String>,
    },

    /// A file's content does not have the expected structure as a whole.
    #[error("{}: {message}", path.display())]
    Format { path: PathBuf, message: String },

    /// The experiment config is invalid.
    #[error("config: {0}")]
    Config(String),

    /// A collective, a rank or a device of a distributed run failed.
    #[error("distributed: {0}")]
    Distributed(String),

    /// A subcommand or option whose implementation has not landed yet.
    #[error("{0} is not implemented yet")]
    NotImplemented(&'static str),
}

impl Error {
    /// Wraps an `io::Error` with the path it concerns.
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.as_ref().to_path_buf(),
            source,
        }
    }

    /// A record-level error for `path` at `line`.
    pub fn record(path: impl AsRef<Path>, line: u64, message: impl Into<String>) -> Self {
        Error::Record {
            path: path.as_ref().to_path_buf(),
            line,
            message: message.into(),
        }
    }

    /// A file-level format error.
    pub fn format(path: impl AsRef<Path>, message: impl Into<String>) -> Self {
        Error::Format {
            path: path.as_ref().to_path_buf(),
            message: message.into(),
        }
    }

    /// Converts a `csv::Error` into an error naming `path` and the line where it happened.
    pub fn csv(path: impl AsRef<Path>, err: csv::Error) -> Self {
        let line = err.position().map(|p| p.line()).unwrap_or(0);
        match err.into_kind() {
            csv::ErrorKind::Io(source) => Error::io(path, source),
            csv::ErrorKind::UnequalLengths {
                expected_len, len, ..
            } => Error::Csv {
                path: path.as_ref().to_path_buf(),
                line,
                message: format!("expected {expected_len} fields, found {len}"),
            },
            csv::ErrorKind::Utf8 { err, .. } => Error::Csv {
                path: path.as_ref().to_path_buf(),
                line,
                message: format!("invalid UTF-8 in field {}", err.field() + 1),
            },
            other => Error::Csv {
                path: path.as_ref().to_path_buf(),
                line,
                message: format!("{other:?}"),
            },
        }
    }

    /// True for errors confined to one record, which `--on-bad-record skip` may skip.
    pub fn is_record_error(&self) -> bool {
        matches!(
            self,
            Error::Csv { .. } | Error::LabelValue { .. } | Error::Record { .. }
        )
    }
}
