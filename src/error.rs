//! The library's error type and how it maps to exit codes (SPEC §10).

use crate::diag::{Diagnostic, Diagnostics};
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Invalid input: usage, config, schema, stepdef or objects file. Exit 2.
    #[error("{0}")]
    Invalid(#[from] Diagnostics),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An operation that could not be carried out (refused, not found, I/O). Exit 1.
    #[error("{0}")]
    Failed(Diagnostic),
}

impl From<Diagnostic> for Error {
    fn from(d: Diagnostic) -> Self {
        Error::Invalid(d.into())
    }
}

impl Error {
    pub fn failed(message: impl Into<String>) -> Error {
        Error::Failed(Diagnostic::error(message))
    }

    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Invalid(_) => 2,
            Error::Store(_) | Error::Failed(_) => 1,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
