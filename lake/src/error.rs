//! Errors of the storage layer.

/// What kind of failure an [`Error`] is, and so whether a retry can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The caller asked for something invalid (bad predicate, bad name).
    InvalidInput,
    /// A table, version or object does not exist.
    NotFound,
    /// A concurrent writer won a race; retrying the operation can succeed.
    Conflict,
    /// Storage is unreachable or throttled; retrying later can succeed.
    Unavailable,
    /// A bug or a broken invariant.
    Internal,
}

/// An error of the lake.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Delta operation failed.
    #[error("delta table `{table}`: {source}")]
    Delta {
        /// Table name.
        table: String,
        /// Cause.
        #[source]
        source: Box<deltalake::DeltaTableError>,
    },
    /// A query failed.
    #[error(transparent)]
    DataFusion(Box<datafusion::error::DataFusionError>),
    /// Arrow failed to build or convert a batch.
    #[error(transparent)]
    Arrow(#[from] arrow::error::ArrowError),
    /// Object storage failed.
    #[error(transparent)]
    ObjectStore(#[from] object_store::Error),
    /// The lake URI is invalid.
    #[error("invalid lake URI `{uri}`: {reason}")]
    InvalidUri {
        /// The URI.
        uri: String,
        /// Why.
        reason: String,
    },
    /// Not one of CROW's tables.
    #[error("unknown table `{0}` (see `crow tables`)")]
    UnknownTable(String),
    /// The lake has not been initialised.
    #[error("table `{table}` does not exist in the lake at {uri} (run `crow init`)")]
    TableMissing {
        /// Table.
        table: String,
        /// Lake URI.
        uri: String,
    },
    /// Invalid input to a lake operation.
    #[error("{0}")]
    Invalid(String),
    /// A local I/O error.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// JSON (de)serialisation failed.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
}

impl Error {
    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        use deltalake::DeltaTableError as D;
        match self {
            Error::Delta { source, .. } => match source.as_ref() {
                D::VersionAlreadyExists(_) | D::Transaction { .. } => ErrorKind::Conflict,
                D::NotATable(_) | D::InvalidVersion(_) => ErrorKind::NotFound,
                D::ObjectStore { source } => store_kind(source),
                D::KernelError(k) => kernel_kind(k),
                D::Generic(_) | D::SchemaMismatch { .. } => ErrorKind::InvalidInput,
                _ => ErrorKind::Internal,
            },
            Error::DataFusion(_) => ErrorKind::InvalidInput,
            Error::InvalidUri { .. } | Error::UnknownTable(_) | Error::Invalid(_) => {
                ErrorKind::InvalidInput
            }
            Error::TableMissing { .. } => ErrorKind::NotFound,
            Error::ObjectStore(e) => store_kind(e),
            Error::Io(_) => ErrorKind::Unavailable,
            Error::Arrow(_) | Error::Json(_) => ErrorKind::Internal,
        }
    }

    /// Whether retrying the same operation can succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self.kind(), ErrorKind::Conflict | ErrorKind::Unavailable)
    }

    pub(crate) fn delta(table: &str, source: deltalake::DeltaTableError) -> Error {
        Error::Delta {
            table: table.to_string(),
            source: Box::new(source),
        }
    }
}

/// The kind of a delta kernel error: one from the object store (a table's
/// log listed or read while the store does not answer) is storage being
/// unavailable, like deltalake's own object-store errors; the rest are the
/// kernel's to explain.
fn kernel_kind(e: &delta_kernel::Error) -> ErrorKind {
    match e {
        delta_kernel::Error::Backtraced { source, .. } => kernel_kind(source),
        delta_kernel::Error::ObjectStore(e) => store_kind(e),
        _ => ErrorKind::Internal,
    }
}

/// S3 error codes that say the lake's configuration is wrong (the bucket,
/// the credentials), which no retry fixes.
const S3_CONFIG_CODES: [&str; 6] = [
    "NoSuchBucket",
    "InvalidBucketName",
    "AccessDenied",
    "AllAccessDisabled",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
];

/// The kind of an object-store error: the store not answering, throttling
/// or failing is unavailable (a retry can succeed); an S3 answer that the
/// bucket does not exist or the credentials are refused is not (the store
/// puts that answer's document in its error text, code and all).
fn store_kind(e: &object_store::Error) -> ErrorKind {
    let text = e.to_string();
    if S3_CONFIG_CODES
        .iter()
        .any(|c| text.contains(&format!("<Code>{c}</Code>")))
    {
        return ErrorKind::Internal;
    }
    ErrorKind::Unavailable
}

impl From<datafusion::error::DataFusionError> for Error {
    /// A lake error raised while DataFusion planned a query (a table loaded
    /// on first use) comes back as itself.
    fn from(e: datafusion::error::DataFusionError) -> Self {
        crate::schema::lake_error_of(e)
    }
}

/// Result of the lake.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    fn store_down() -> object_store::Error {
        object_store::Error::Generic {
            store: "S3",
            source: "error sending request: connection refused".into(),
        }
    }

    /// A table's log that cannot be listed because the store does not
    /// answer is storage being unavailable (a retry can succeed; the API
    /// answers 503), however the kernel wraps it; a bucket that does not
    /// exist and other kernel errors are not.
    #[test]
    fn kernel_errors_from_the_store_are_unavailable() {
        let kernel = |k| Error::delta("t", deltalake::DeltaTableError::KernelError(k));
        let e = kernel(delta_kernel::Error::ObjectStore(store_down()));
        assert_eq!(e.kind(), ErrorKind::Unavailable);
        assert!(e.is_retryable());
        let e = kernel(delta_kernel::Error::Backtraced {
            source: Box::new(delta_kernel::Error::ObjectStore(store_down())),
            backtrace: Box::new(std::backtrace::Backtrace::disabled()),
        });
        assert_eq!(e.kind(), ErrorKind::Unavailable);
        let missing = object_store::Error::Generic {
            store: "S3",
            source: "404 Not Found: <?xml version=\"1.0\"?><Error><Code>NoSuchBucket</Code>\
                <Message>The specified bucket does not exist</Message></Error>"
                .into(),
        };
        let e = kernel(delta_kernel::Error::ObjectStore(missing));
        assert_eq!(e.kind(), ErrorKind::Internal, "no retry creates a bucket");
        assert!(!e.is_retryable());
        let e = kernel(delta_kernel::Error::Generic("a bad log".into()));
        assert_eq!(e.kind(), ErrorKind::Internal);
        assert!(!e.is_retryable());
    }
}
