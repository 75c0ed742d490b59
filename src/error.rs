//! The library's error type. Every variant says what kind of failure it is and names the file, row, column, key,
//! rank or shard it concerns, so that a message explains itself without a backtrace. Errors of the libraries
//! below (Parquet, JSON, tokenizers, images) are kept as their `source`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Result alias used throughout the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in chexlab's library code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O operation on a file failed (missing, unreadable, not writable, ...).
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },

    /// The CSV layer could not read a record (bad UTF-8, wrong number of fields, ...).
    #[error("{}: line {line}: {message}", path.display())]
    Csv {
        /// The CSV file.
        path: PathBuf,
        /// 1-based line of the record.
        line: u64,
        /// What is wrong with it.
        message: String,
    },

    /// A label cell holds something other than `1`, `1.0`, `0`, `0.0`, `-1`, `-1.0` or empty.
    #[error(
        "{}: line {line}, column '{column}': invalid label value '{value}' \
         (expected 1, 1.0, 0, 0.0, -1, -1.0 or empty)",
        path.display()
    )]
    LabelValue {
        /// The label file.
        path: PathBuf,
        /// 1-based line of the record.
        line: u64,
        /// The observation column.
        column: String,
        /// The cell as written.
        value: String,
    },

    /// A record is well-formed CSV but its content is wrong (bad id, bad path, unknown split, ...).
    #[error("{}: line {line}: {message}", path.display())]
    Record {
        /// The file.
        path: PathBuf,
        /// 1-based line of the record.
        line: u64,
        /// What is wrong with it.
        message: String,
    },

    /// Required columns are absent from a CSV header.
    #[error("{}: missing column(s) {}; header has: {}", path.display(), missing.join(", "), found.join(", "))]
    MissingColumns {
        /// The CSV file.
        path: PathBuf,
        /// Columns that are needed and absent.
        missing: Vec<String>,
        /// The header as found.
        found: Vec<String>,
    },

    /// A file's content does not have the expected structure as a whole.
    #[error("{}: {message}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },

    /// A Parquet shard could not be read or written.
    #[error("{}: parquet: {source}", path.display())]
    Parquet {
        /// The shard file.
        path: PathBuf,
        /// The Parquet or Arrow layer's error.
        #[source]
        source: parquet::errors::ParquetError,
    },

    /// A JSON file (index, scores, results, metadata) could not be parsed.
    #[error("{}: not the expected JSON: {source}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// serde_json's error (with line and column).
        #[source]
        source: serde_json::Error,
    },

    /// A tokenizer could not be loaded, trained or applied.
    #[error("{}: tokenizer: {source}", path.display())]
    Tokenizer {
        /// The tokenizer file (or `<report>` when encoding text).
        path: PathBuf,
        /// The tokenizers crate's error.
        #[source]
        source: tokenizers::Error,
    },

    /// An image could not be decoded or encoded.
    #[error("{}: image: {source}", path.display())]
    Image {
        /// The image (file, or shard directory and image id).
        path: PathBuf,
        /// The image crate's error.
        #[source]
        source: image::ImageError,
    },

    /// The experiment config (or a command-line value standing in for one) is invalid.
    #[error("config: {0}")]
    Config(String),

    /// A checkpoint is corrupt or was written with other settings than the ones it is loaded with.
    #[error("{}: checkpoint: {message}", path.display())]
    Checkpoint {
        /// The checkpoint file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },

    /// A model cannot be built, (de)serialised or read back from its device.
    #[error("model: {what}: {detail}")]
    Model {
        /// Which model or operation.
        what: String,
        /// What went wrong.
        detail: String,
    },

    /// A collective, a rank or a device of a distributed run failed.
    #[error("distributed: {}{op}: {detail}", rank.map(|r| format!("rank {r}: ")).unwrap_or_default())]
    Distributed {
        /// The rank that saw the failure, where known.
        rank: Option<usize>,
        /// The operation (all-reduce, broadcast, NCCL init, ...).
        op: String,
        /// What happened.
        detail: String,
    },

    /// A request the inputs cannot satisfy: nothing trained yet, a source the shards lack, too few images.
    #[error("{0}")]
    Input(String),

    /// A stage stopped at a safe point because a stop was requested (SIGUSR2, Slurm's warning before preemption
    /// or the time limit): what it finished is kept, and running it again continues from there.
    #[error("stopped by signal: {0}")]
    Stopped(String),

    /// An error raised on another rank (rank 0 of a stage that runs there alone), with its own kind.
    #[error("on rank {rank}: {message}")]
    OnRank {
        /// The rank it was raised on.
        rank: usize,
        /// Its kind there.
        kind: ErrorKind,
        /// Its message there.
        message: String,
    },
}

/// The kind of an [`Error`], without its payload: what travels between ranks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// [`Error::Io`].
    Io,
    /// [`Error::Csv`].
    Csv,
    /// [`Error::LabelValue`].
    LabelValue,
    /// [`Error::Record`].
    Record,
    /// [`Error::MissingColumns`].
    MissingColumns,
    /// [`Error::Format`].
    Format,
    /// [`Error::Parquet`].
    Parquet,
    /// [`Error::Json`].
    Json,
    /// [`Error::Tokenizer`].
    Tokenizer,
    /// [`Error::Image`].
    Image,
    /// [`Error::Config`].
    Config,
    /// [`Error::Checkpoint`].
    Checkpoint,
    /// [`Error::Model`].
    Model,
    /// [`Error::Distributed`].
    Distributed,
    /// [`Error::Input`].
    Input,
    /// [`Error::Stopped`].
    Stopped,
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

    /// A Parquet error on `path`.
    pub fn parquet(
        path: impl AsRef<Path>,
        source: impl Into<parquet::errors::ParquetError>,
    ) -> Self {
        Error::Parquet {
            path: path.as_ref().to_path_buf(),
            source: source.into(),
        }
    }

    /// A JSON error on `path`.
    pub fn json(path: impl AsRef<Path>, source: serde_json::Error) -> Self {
        Error::Json {
            path: path.as_ref().to_path_buf(),
            source,
        }
    }

    /// A tokenizer error on `path`.
    pub fn tokenizer(path: impl AsRef<Path>, source: tokenizers::Error) -> Self {
        Error::Tokenizer {
            path: path.as_ref().to_path_buf(),
            source,
        }
    }

    /// An image error on `path`.
    pub fn image(path: impl AsRef<Path>, source: image::ImageError) -> Self {
        Error::Image {
            path: path.as_ref().to_path_buf(),
            source,
        }
    }

    /// A checkpoint error on `path`.
    pub fn checkpoint(path: impl AsRef<Path>, message: impl Into<String>) -> Self {
        Error::Checkpoint {
            path: path.as_ref().to_path_buf(),
            message: message.into(),
        }
    }

    /// A model error: `what` failed with `detail` (often a Burn error's debug form).
    pub fn model(what: impl Into<String>, detail: impl std::fmt::Debug) -> Self {
        let detail = format!("{detail:?}");
        // A plain string's debug form is quoted; keep messages readable.
        let detail = detail
            .strip_prefix('"')
            .and_then(|d| d.strip_suffix('"'))
            .map(str::to_string)
            .unwrap_or(detail);
        Error::Model {
            what: what.into(),
            detail,
        }
    }

    /// A distributed error: `op` failed on `rank` (when known) with `detail`.
    pub fn distributed(
        rank: Option<usize>,
        op: impl Into<String>,
        detail: impl Into<String>,
    ) -> Self {
        Error::Distributed {
            rank,
            op: op.into(),
            detail: detail.into(),
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

    /// This error's kind; for an error raised on another rank, the kind it had there.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Io { .. } => ErrorKind::Io,
            Error::Csv { .. } => ErrorKind::Csv,
            Error::LabelValue { .. } => ErrorKind::LabelValue,
            Error::Record { .. } => ErrorKind::Record,
            Error::MissingColumns { .. } => ErrorKind::MissingColumns,
            Error::Format { .. } => ErrorKind::Format,
            Error::Parquet { .. } => ErrorKind::Parquet,
            Error::Json { .. } => ErrorKind::Json,
            Error::Tokenizer { .. } => ErrorKind::Tokenizer,
            Error::Image { .. } => ErrorKind::Image,
            Error::Config(_) => ErrorKind::Config,
            Error::Checkpoint { .. } => ErrorKind::Checkpoint,
            Error::Model { .. } => ErrorKind::Model,
            Error::Distributed { .. } => ErrorKind::Distributed,
            Error::Input(_) => ErrorKind::Input,
            Error::Stopped(_) => ErrorKind::Stopped,
            Error::OnRank { kind, .. } => *kind,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_say_their_kind_and_place() {
        let e = Error::distributed(Some(3), "all-reduce #7", "timed out");
        assert_eq!(
            e.to_string(),
            "distributed: rank 3: all-reduce #7: timed out"
        );
        assert_eq!(e.kind(), ErrorKind::Distributed);
        let e = Error::checkpoint("/r/best.ckpt", "bad header");
        assert_eq!(e.to_string(), "/r/best.ckpt: checkpoint: bad header");
        let e = Error::model("serialising the model", "out of memory");
        assert_eq!(e.to_string(), "model: serialising the model: out of memory");
        let json = serde_json::from_str::<u32>("x").unwrap_err();
        let e = Error::json("/r/index.json", json);
        assert!(
            e.to_string()
                .starts_with("/r/index.json: not the expected JSON"),
            "{e}"
        );
        assert!(std::error::Error::source(&e).is_some());
    }

    #[test]
    fn an_error_from_another_rank_keeps_its_kind() {
        let e = Error::OnRank {
            rank: 0,
            kind: ErrorKind::Checkpoint,
            message: "x".into(),
        };
        assert_eq!(e.kind(), ErrorKind::Checkpoint);
        assert_eq!(e.to_string(), "on rank 0: x");
    }
}
