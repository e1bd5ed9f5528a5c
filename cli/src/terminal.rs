//! The local terminal: raw mode, window size, stdin forwarding, signals to forward.

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::path::PathBuf;

use nix::sys::termios::{self, SetArg, Termios};
use tokio::signal::unix::{signal, Signal, SignalKind};

/// Puts stdin in raw mode while alive.
pub struct RawMode {
    saved: Termios,
}

impl RawMode {
    pub fn enable_if_tty() -> Option<RawMode> {
        let stdin = std::io::stdin();
        let saved = termios::tcgetattr(stdin.as_fd()).ok()?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw).ok()?;
        Some(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(std::io::stdin().as_fd(), SetArg::TCSANOW, &self.saved);
    }
}

/// Columns and rows of the terminal on stdout (or stdin).
pub fn size() -> Option<(u32, u32)> {
    for fd in [1, 0] {
        let mut ws = nix::libc::winsize {
            ws_row: 0,
            ws_col: 0,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCGWINSZ writes a winsize into the struct we own.
        let r = unsafe { nix::libc::ioctl(fd, nix::libc::TIOCGWINSZ, &mut ws) };
        if r == 0 && ws.ws_col > 0 {
            return Some((u32::from(ws.ws_col), u32::from(ws.ws_row)));
        }
    }
    None
}

/// Copy our stdin into the container's stdin FIFO on a thread; closing it at EOF.
pub fn forward_stdin(fifo: PathBuf) {
    std::thread::spawn(move || {
        let Ok(mut out) = std::fs::OpenOptions::new().write(true).open(&fifo) else {
            return;
        };
        let mut buf = [0u8; 8192];
        let mut stdin = std::io::stdin();
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if out.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
    });
}

pub enum Event {
    /// Forward this signal number to the container.
    Signal(i32),
    /// The terminal changed size.
    Resize,
}

/// Signals a foreground run forwards (docker's sig-proxy), plus window changes.
pub struct Signals {
    int: Signal,
    term: Signal,
    hup: Signal,
    quit: Signal,
    winch: Signal,
}

impl Signals {
    pub fn new() -> std::io::Result<Signals> {
        Ok(Signals {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
            hup: signal(SignalKind::hangup())?,
            quit: signal(SignalKind::quit())?,
            winch: signal(SignalKind::window_change())?,
        })
    }

    pub async fn next(&mut self) -> Event {
        use nix::sys::signal::Signal as S;
        tokio::select! {
            _ = self.int.recv() => Event::Signal(S::SIGINT as i32),
            _ = self.term.recv() => Event::Signal(S::SIGTERM as i32),
            _ = self.hup.recv() => Event::Signal(S::SIGHUP as i32),
            _ = self.quit.recv() => Event::Signal(S::SIGQUIT as i32),
            _ = self.winch.recv() => Event::Resize,
        }
    }
}
