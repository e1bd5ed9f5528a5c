//! Starting a helper process (the monitor, the supervisor) in its own session, so it outlives
//! the command that started it, and reading its first report.
//!
//! The child's stderr is appended to `log` (a restarted helper keeps what its predecessor
//! said); a socket pair's far end becomes its descriptor 3 (`AAC_SYNC_FD=3`), on which it sends
//! one JSON line when it is ready, then whatever else it reports.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::io::{io_err, IoError};

/// A helper started by [`spawn`]: its first line, and the socket for the rest.
pub(crate) struct Spawned {
    /// The first line it sent, trimmed; `None` when it closed the socket first.
    pub first: Option<String>,
    pub reader: BufReader<UnixStream>,
}

/// Start `bin ARGS` in a new session with `env`, stderr appended to `log`; wait for its first
/// line.
pub(crate) fn spawn(
    bin: &Path,
    args: &[&OsStr],
    env: &[(&str, &OsStr)],
    log: &Path,
) -> Result<Spawned, IoError> {
    let log_file = crate::state::private_options()
        .create(true)
        .append(true)
        .open(log)
        .map_err(io_err("creating", log))?;
    // Both ends close-on-exec; the child's end becomes its descriptor 3 (dup2 clears the
    // flag on the copy).
    let (ours, theirs) = UnixStream::pair().map_err(io_err("creating a socket for", log))?;
    let their_fd = theirs.as_raw_fd();
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .env("AAC_SYNC_FD", "3")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_file);
    for (k, v) in env {
        cmd.env(k, v);
    }
    // SAFETY: only async-signal-safe calls (setsid, dup2) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            if nix::libc::dup2(their_fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(io_err("starting", bin))?;
    drop(theirs);
    // The helper lives on in its own session; reap it in the background if we outlive it.
    std::thread::spawn(move || {
        let mut child = child;
        let _ = child.wait();
    });
    first_report(ours).map_err(io_err("reading the first report of", bin))
}

/// Wait for the first line a helper sends on `stream` (a process or a thread of ours).
pub(crate) fn first_report(stream: UnixStream) -> std::io::Result<Spawned> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    let n = reader.read_line(&mut line)?;
    Ok(Spawned {
        first: (n > 0).then(|| line.trim().to_string()),
        reader,
    })
}
