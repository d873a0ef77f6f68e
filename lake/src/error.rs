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
                D::ObjectStore { .. } => ErrorKind::Unavailable,
                D::Generic(_) | D::SchemaMismatch { .. } => ErrorKind::InvalidInput,
                _ => ErrorKind::Internal,
            },
            Error::DataFusion(_) => ErrorKind::InvalidInput,
            Error::InvalidUri { .. } | Error::UnknownTable(_) | Error::Invalid(_) => {
                ErrorKind::InvalidInput
            }
            Error::TableMissing { .. } => ErrorKind::NotFound,
            Error::ObjectStore(_) | Error::Io(_) => ErrorKind::Unavailable,
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

impl From<datafusion::error::DataFusionError> for Error {
    /// A lake error raised while DataFusion planned a query (a table loaded
    /// on first use) comes back as itself.
    fn from(e: datafusion::error::DataFusionError) -> Self {
        crate::schema::lake_error_of(e)
    }
}

/// Result of the lake.
pub type Result<T, E = Error> = std::result::Result<T, E>;
