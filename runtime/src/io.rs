//! The one I/O error of the library: what was being done, to which path, and why it failed.

use std::io;
use std::path::{Path, PathBuf};

/// An I/O operation on a path failed: `creating /var/lib/aac/names: permission denied`.
#[derive(Debug, thiserror::Error)]
#[error("{op} {}: {source}", path.display())]
pub struct IoError {
    /// What was being done, as a present participle: "reading", "creating", ...
    pub op: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

impl IoError {
    pub fn new(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> IoError {
        IoError {
            op,
            path: path.into(),
            source,
        }
    }

    pub fn kind(&self) -> io::ErrorKind {
        self.source.kind()
    }
}

/// For `map_err`: `fs::read(&p).map_err(io_err("reading", &p))?`.
pub fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> IoError {
    let path = path.to_path_buf();
    move |source| IoError { op, path, source }
}

/// `fs::read(&p).op("reading", &p)?`.
pub trait IoContext<T> {
    fn op(self, op: &'static str, path: &Path) -> Result<T, IoError>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn op(self, op: &'static str, path: &Path) -> Result<T, IoError> {
        self.map_err(io_err(op, path))
    }
}
