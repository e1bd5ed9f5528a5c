//! The local terminal: raw mode, window size, stdin forwarding, signals to forward.

use tokio::signal::unix::{signal, Signal, SignalKind};

pub use aac_runtime::backend::RawMode;

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
