//! Reading an agent.yaml safely: a regular file only, of bounded size.
//!
//! The path comes from the user (or from a folder someone else controls), so reading it must
//! not hang or eat memory: the file is opened with `O_NONBLOCK` (opening a FIFO then returns
//! at once instead of waiting for a writer), checked with `fstat` on the open descriptor (no
//! race with a rename), refused unless it is a regular file, refused above
//! [`MAX_AGENT_FILE`] bytes, and read through a bounded reader in case it grows meanwhile.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// The largest agent.yaml aac reads: 1 MiB.
pub const MAX_AGENT_FILE: u64 = 1 << 20;

/// Why a file could not be read as text.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{path}: cannot read: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: is {kind}, not a regular file")]
    NotRegular { path: String, kind: &'static str },
    #[error("{path}: is larger than {limit} bytes ({size} bytes)")]
    TooLarge { path: String, size: u64, limit: u64 },
    #[error("{path}: is not UTF-8 text")]
    NotText { path: String },
}

/// What a non-regular file is, for the error.
fn kind_of(t: std::fs::FileType) -> &'static str {
    if t.is_dir() {
        "a folder"
    } else if t.is_fifo() {
        "a FIFO (named pipe)"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

/// Read `path` as UTF-8 text: a regular file of at most `limit` bytes.
pub fn read_text(path: &Path, limit: u64) -> Result<String, SourceError> {
    let shown = path.display().to_string();
    let io = |source| SourceError::Io {
        path: shown.clone(),
        source,
    };
    let file: File = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(path)
        .map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if !meta.file_type().is_file() {
        return Err(SourceError::NotRegular {
            path: shown,
            kind: kind_of(meta.file_type()),
        });
    }
    let too_large = |size| SourceError::TooLarge {
        path: shown.clone(),
        size,
        limit,
    };
    if meta.len() > limit {
        return Err(too_large(meta.len()));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(limit + 1).read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() as u64 > limit {
        return Err(too_large(bytes.len() as u64));
    }
    String::from_utf8(bytes).map_err(|_| SourceError::NotText { path: shown })
}

/// Read an agent.yaml (at most [`MAX_AGENT_FILE`] bytes).
pub fn read_agent_file(path: &Path) -> Result<String, SourceError> {
    read_text(path, MAX_AGENT_FILE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_what_is_not_a_small_regular_file() {
        let dir = tempdir();
        let fifo = dir.join("fifo.yaml");
        nix_mkfifo(&fifo);
        let e = read_agent_file(&fifo).unwrap_err().to_string();
        assert!(
            e.ends_with("is a FIFO (named pipe), not a regular file"),
            "{e}"
        );
        let e = read_agent_file(Path::new("/dev/zero"))
            .unwrap_err()
            .to_string();
        assert_eq!(e, "/dev/zero: is a character device, not a regular file");
        let e = read_agent_file(&dir).unwrap_err().to_string();
        assert!(e.ends_with("is a folder, not a regular file"), "{e}");
        let big = dir.join("big.yaml");
        std::fs::write(&big, vec![b'#'; (MAX_AGENT_FILE + 1) as usize]).unwrap();
        let e = read_agent_file(&big).unwrap_err().to_string();
        assert!(
            e.contains("is larger than 1048576 bytes (1048577 bytes)"),
            "{e}"
        );
        let bin = dir.join("bin.yaml");
        std::fs::write(&bin, [0xff, 0xfe, 0]).unwrap();
        assert!(matches!(
            read_agent_file(&bin),
            Err(SourceError::NotText { .. })
        ));
        let ok = dir.join("ok.yaml");
        std::fs::write(&ok, "a: 1\n").unwrap();
        assert_eq!(read_agent_file(&ok).unwrap(), "a: 1\n");
        let e = read_agent_file(&dir.join("absent.yaml")).unwrap_err();
        assert!(e.to_string().contains("cannot read"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn tempdir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("aac-agent-source-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn nix_mkfifo(p: &Path) {
        let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    }
}
