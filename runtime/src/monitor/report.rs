//! The monitor's side of the socket it reports to its launcher on: one JSON line
//! ([`StartOutcome`]) once the first start succeeded or failed, then one line ([`ExitReport`])
//! per exit of the container's main process. For an `--rm` container it waits, before
//! removing the records, until the launcher shuts down its side of the socket (or is gone);
//! the socket closes when the monitor is done. aac-shim gets its end as descriptor
//! `AAC_SYNC_FD`; a monitor run inside `aac run` itself ([`crate::engine`]) gets it directly.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use super::{ExitReport, StartOutcome, StartReport};

/// Reports to the launcher on a socket (or pipe).
pub struct SyncPipe {
    file: Option<File>,
    /// The start outcome went out: a later failure is not a failed start.
    reported: bool,
    /// That outcome was a successful start.
    started: bool,
}

impl SyncPipe {
    /// The descriptor named by `AAC_SYNC_FD` (aac-shim), made close-on-exec.
    pub fn from_env() -> SyncPipe {
        let fd = std::env::var("AAC_SYNC_FD")
            .ok()
            .and_then(|v| v.parse::<i32>().ok())
            .filter(|fd| *fd > 2);
        let Some(fd) = fd else {
            return SyncPipe::closed();
        };
        // Nothing the monitor starts (CNI plugins, health probes) may hold the launcher's
        // socket open: it closes when the monitor is done.
        if let Err(e) = nix::fcntl::fcntl(
            fd,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        ) {
            tracing::warn!("AAC_SYNC_FD={fd}: {e}");
            return SyncPipe::closed();
        }
        // SAFETY: the launcher created this descriptor for us and nothing else owns it.
        SyncPipe::new(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// Report on `fd` (close-on-exec already).
    pub fn new(fd: OwnedFd) -> SyncPipe {
        SyncPipe {
            file: Some(File::from(fd)),
            reported: false,
            started: false,
        }
    }

    pub fn closed() -> SyncPipe {
        SyncPipe {
            file: None,
            reported: false,
            started: false,
        }
    }

    /// Whether the container's first start was reported as done (a later failure of the
    /// monitor reaches the launcher by no other way than its log).
    pub fn has_started(&self) -> bool {
        self.started
    }

    /// Write one line; a launcher that is gone (EPIPE) is not told again. On a socket the
    /// write never raises SIGPIPE (a monitor inside `aac run` shares its process).
    fn send<T: serde::Serialize>(&mut self, message: &T) {
        let Some(f) = self.file.as_mut() else { return };
        let Ok(mut line) = serde_json::to_vec(message) else {
            return;
        };
        line.push(b'\n');
        if write_line(f, &line).is_err() {
            self.file = None;
        }
    }
}

fn write_line(f: &mut File, mut line: &[u8]) -> std::io::Result<()> {
    use nix::sys::socket::{send, MsgFlags};
    while !line.is_empty() {
        match send(
            std::os::fd::AsRawFd::as_raw_fd(f),
            line,
            MsgFlags::MSG_NOSIGNAL,
        ) {
            Ok(n) => line = &line[n..],
            Err(nix::errno::Errno::EINTR) => {}
            Err(nix::errno::Errno::ENOTSOCK) => return f.write_all(line),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

impl StartReport for SyncPipe {
    fn started(&mut self, pid: u32, warnings: &[String]) {
        if std::mem::replace(&mut self.reported, true) {
            return;
        }
        self.started = true;
        self.send(&StartOutcome {
            ok: true,
            pid,
            code: 0,
            error: String::new(),
            warnings: warnings.to_vec(),
        });
    }

    fn failed(&mut self, code: i32, message: &str) {
        if std::mem::replace(&mut self.reported, true) {
            return;
        }
        self.send(&StartOutcome {
            ok: false,
            pid: 0,
            code,
            error: message.to_string(),
            warnings: Vec::new(),
        });
        // Nothing follows a failed start.
        self.file = None;
    }

    fn exited(&mut self, code: i32) {
        self.send(&ExitReport { exit_code: code });
    }

    fn wait_released(&mut self, timeout: Duration) {
        let Some(f) = self.file.as_mut() else { return };
        // The launcher sends nothing: end-of-file (or an error) means it is done or gone.
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 64];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
            if ms == 0 {
                tracing::warn!("the launcher did not release the container within {timeout:?}");
                return;
            }
            let mut fds = [PollFd::new(f.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::from(ms)) {
                Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
                Ok(_) => match f.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => continue,
                },
                Err(_) => return,
            }
        }
    }
}
