//! Errors of the collector crate: one [`Error`] for its public entry points
//! (starting a collector, importing, flushing), wrapping the specific inner
//! errors ([`WalError`], [`ImportError`], the lake's, local I/O) with their
//! sources kept and their messages unchanged.

use crate::import::ImportError;
use crate::wal::WalError;

/// What a caller can do about an [`Error`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Storage or the WAL is busy, unreachable or full: retrying later can
    /// succeed.
    Retryable,
    /// The input (a file, a name, a value) cannot be used as given.
    InvalidInput,
    /// A bug or a broken invariant.
    Internal,
}

/// An error of the collector.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The write-ahead log refused or failed.
    #[error(transparent)]
    Wal(#[from] WalError),
    /// An import failed.
    #[error(transparent)]
    Import(#[from] ImportError),
    /// The lake failed.
    #[error(transparent)]
    Lake(#[from] crow_lake::Error),
    /// Local I/O failed (the WAL folder, its salt or id files, a listener).
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// A background task panicked.
    #[error("{task} panicked: {source}")]
    Panicked {
        /// What the task did.
        task: &'static str,
        /// The join error.
        #[source]
        source: tokio::task::JoinError,
    },
}

impl Error {
    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Wal(_) | Error::Io(_) => ErrorKind::Retryable,
            Error::Import(ImportError::Read { .. } | ImportError::Parquet { .. }) => {
                ErrorKind::InvalidInput
            }
            Error::Import(ImportError::Lake(e)) | Error::Lake(e) => lake_kind(e),
            Error::Import(ImportError::Task(_)) | Error::Panicked { .. } => ErrorKind::Internal,
        }
    }

    /// Whether retrying the same operation can succeed.
    pub fn is_retryable(&self) -> bool {
        self.kind() == ErrorKind::Retryable
    }
}

/// A lake error's kind, as the collector's.
fn lake_kind(e: &crow_lake::Error) -> ErrorKind {
    use crow_lake::ErrorKind as Lake;
    match e.kind() {
        Lake::Conflict | Lake::Unavailable => ErrorKind::Retryable,
        Lake::InvalidInput | Lake::NotFound => ErrorKind::InvalidInput,
        Lake::Internal => ErrorKind::Internal,
    }
}

/// Result of the collector.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_say_what_a_caller_can_do() {
        assert!(Error::from(WalError::Backpressure).is_retryable());
        let io = std::io::Error::other("disk full");
        assert!(Error::from(io).is_retryable());
        let bad = ImportError::Read {
            file: "a.jsonl".into(),
            source: std::io::Error::other("not gzip"),
        };
        assert_eq!(Error::from(bad).kind(), ErrorKind::InvalidInput);
        let invalid = crow_lake::Error::Invalid("bad".into());
        assert_eq!(Error::from(invalid).kind(), ErrorKind::InvalidInput);
        assert_eq!(
            Error::from(ImportError::Task("gone".into())).kind(),
            ErrorKind::Internal
        );
        // Messages are the inner errors' own.
        assert_eq!(
            Error::from(WalError::Backpressure).to_string(),
            "the collector is busy: retry later"
        );
    }
}
