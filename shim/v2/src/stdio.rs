//! A process's standard streams as containerd names them: a FIFO or existing regular file
//! path, `file:///abs`, or empty (/dev/null). Output paths are opened once and handed to the
//! process itself: its writes reach aac's FIFO (or file) without a copy in the shim. Stdin is
//! copied through a pipe so CloseIO can end it; a terminal's master is copied both ways.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Open an output stream for the process.
pub fn open_output(uri: &str) -> Result<Option<OwnedFd>, String> {
    if uri.is_empty() {
        return Ok(None);
    }
    if uri.starts_with("binary://") || uri.starts_with("fifo://") {
        return Err(format!(
            "{uri}: the aac shim takes a FIFO or file path or file:// URI"
        ));
    }
    let (path, create) = match uri.strip_prefix("file://") {
        Some(p) => (p, true),
        None => (uri, false),
    };
    let p = Path::new(path);
    let fifo = std::fs::metadata(p)
        .map(|m| m.file_type().is_fifo())
        .unwrap_or(false);
    let f = if fifo {
        // Read-write: never blocks, whoever reads the FIFO reads what the process writes.
        OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(p)
    } else {
        if create {
            if let Some(dir) = p.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
        }
        OpenOptions::new()
            .append(true)
            .create(create)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(p)
    }
    .map_err(|e| format!("opening {path}: {e}"))?;
    Ok(Some(f.into()))
}

/// The writing end of a process's stdin pipe, closed by CloseIO (or when the FIFO ends).
#[derive(Clone, Default)]
pub struct StdinWriter(Arc<Mutex<Option<File>>>);

impl StdinWriter {
    pub fn close(&self) {
        if let Ok(mut w) = self.0.lock() {
            w.take();
        }
    }

    fn write_all(&self, data: &[u8]) -> bool {
        match self.0.lock() {
            Ok(mut w) => match w.as_mut() {
                Some(f) => f.write_all(data).is_ok(),
                None => false,
            },
            Err(_) => false,
        }
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd), String> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: fds has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(format!("pipe: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: pipe2 just returned these descriptors; nothing else owns them.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// The process's stdin: the read end of a pipe a thread fills from the FIFO at `uri` until
/// the FIFO's writers are gone or CloseIO.
pub fn open_stdin(uri: &str) -> Result<Option<(OwnedFd, StdinWriter)>, String> {
    if uri.is_empty() {
        return Ok(None);
    }
    let (r, w) = pipe()?;
    let writer = StdinWriter(Arc::new(Mutex::new(Some(File::from(w)))));
    let path = PathBuf::from(uri);
    let wr = writer.clone();
    std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            // Blocks until a client opens the FIFO for writing.
            if let Ok(mut fifo) = File::open(&path) {
                let mut buf = [0u8; 32 * 1024];
                loop {
                    match fifo.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if !wr.write_all(&buf[..n]) {
                                break;
                            }
                        }
                    }
                }
            }
            wr.close();
        })
        .map_err(|e| format!("stdin thread: {e}"))?;
    Ok(Some((r, writer)))
}

/// End a stdin whose copier may still wait for a writer: open the FIFO for writing once
/// (without blocking) so its reader sees end-of-file, and close the pipe.
pub fn close_stdin(uri: &str, writer: &StdinWriter) {
    if !uri.is_empty() {
        let _ = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(uri);
    }
    writer.close();
}

/// A socket runc hands a new terminal's master to (`--console-socket`).
pub struct ConsoleSocket {
    pub path: PathBuf,
    listener: UnixListener,
}

impl ConsoleSocket {
    pub fn new(dir: &Path, name: &str) -> Result<ConsoleSocket, String> {
        let path = dir.join(name);
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(ConsoleSocket { path, listener })
    }

    /// The master runc sent (call after `runc create`/`exec` returned successfully).
    pub fn receive(&self) -> Result<File, String> {
        self.listener
            .set_nonblocking(true)
            .map_err(|e| format!("console socket: {e}"))?;
        let (stream, _) = self
            .listener
            .accept()
            .map_err(|e| format!("runc sent no terminal: {e}"))?;
        stream
            .set_nonblocking(false)
            .map_err(|e| format!("console socket: {e}"))?;
        recv_fd(stream.as_raw_fd())
    }
}

impl Drop for ConsoleSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn recv_fd(sock: RawFd) -> Result<File, String> {
    let mut data = [0u8; 4096];
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    // SAFETY: CMSG_SPACE computes a size; no memory is touched.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) } as usize;
    let mut cbuf = vec![0u8; space];
    // SAFETY: msghdr is plain data; every pointer set below outlives the recvmsg call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: msg points at live buffers of the sizes it states.
    let n = unsafe { libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(format!(
            "receiving the terminal: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: msg was filled by recvmsg; CMSG_FIRSTHDR/CMSG_DATA stay inside cbuf.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        if cmsg.is_null()
            || (*cmsg).cmsg_level != libc::SOL_SOCKET
            || (*cmsg).cmsg_type != libc::SCM_RIGHTS
        {
            return Err("runc sent no terminal descriptor".into());
        }
        let fd = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg) as *const RawFd);
        Ok(File::from_raw_fd(fd))
    }
}

/// Copy a terminal's master to the output at `stdout` and the FIFO at `stdin` (if any) into
/// the master, on threads that end with the terminal.
pub fn copy_console(master: &File, stdin: &str, stdout: Option<OwnedFd>) -> Result<(), String> {
    let mut reader = master.try_clone().map_err(|e| format!("terminal: {e}"))?;
    if let Some(out) = stdout {
        let mut out = File::from(out);
        std::thread::Builder::new()
            .name("console-out".into())
            .spawn(move || {
                let mut buf = [0u8; 32 * 1024];
                loop {
                    match reader.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => {
                            if out.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        // EIO: every slave is closed.
                        Err(_) => break,
                    }
                }
            })
            .map_err(|e| format!("terminal thread: {e}"))?;
    }
    if !stdin.is_empty() {
        let mut writer = master.try_clone().map_err(|e| format!("terminal: {e}"))?;
        let path = PathBuf::from(stdin);
        std::thread::Builder::new()
            .name("console-in".into())
            .spawn(move || {
                if let Ok(mut fifo) = File::open(&path) {
                    let mut buf = [0u8; 8192];
                    while let Ok(n) = fifo.read(&mut buf) {
                        if n == 0 || writer.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                }
            })
            .map_err(|e| format!("terminal thread: {e}"))?;
    }
    Ok(())
}

/// Set a terminal's size.
pub fn resize(master: &File, width: u32, height: u32) -> Result<(), String> {
    let ws = libc::winsize {
        ws_row: height as u16,
        ws_col: width as u16,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize from the pointer.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) } != 0 {
        return Err(format!("resize: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}
