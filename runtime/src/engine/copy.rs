//! `cp`: files between a running container and the host, as tar streams (docker's `cp`,
//! `-` for a tar on stdin/stdout). Paths inside the container are resolved by a helper
//! process chrooted into the container's root (`/proc/PID/root`, both backends), so a
//! symbolic link in the container never leads out of it. The helper is this executable run
//! with [`COPY_HELPER_ARG`]: it has its libraries loaded before it enters the container.
//!
//! Content and permission bits are kept; files written on either side belong to the caller
//! (root inside the container), as with docker.

use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};

use super::{Container, Engine, EngineError, Result};

/// The first argument that makes the `aac` binary act as the copy helper.
pub const COPY_HELPER_ARG: &str = "__aac-copy-helper";

/// Where copied files come from or go on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostSide {
    /// A tar stream on this process's stdin or stdout (`-`).
    Stream,
    Path(PathBuf),
}

/// The last component of `path` as docker names a copy: `"."` for `dir/.` (its content).
fn copy_name(path: &str) -> Result<String> {
    if path.ends_with("/.") || path == "." {
        return Ok(".".into());
    }
    Path::new(path)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| EngineError::Invalid(format!("cannot copy {path:?}: it names no file")))
}

fn helper_binary() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("AAC_COPY_HELPER") {
        return Ok(PathBuf::from(p));
    }
    std::env::current_exe()
        .map_err(|e| crate::io::IoError::new("finding", "this executable", e).into())
}

/// A tar entry path that stays below where it is unpacked.
fn safe_relative(p: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            _ => return None,
        }
    }
    Some(out)
}

/// Unpack `archive` below `dir`, the first component of each entry replaced by `rename`
/// when given; modes and times kept, ownership not (the files are the caller's).
pub fn unpack_into(
    input: impl Read,
    dir: &Path,
    rename: Option<&str>,
) -> std::result::Result<(), String> {
    let mut archive = tar::Archive::new(input);
    let entries = archive
        .entries()
        .map_err(|e| format!("reading the tar stream: {e}"))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| format!("reading the tar stream: {e}"))?;
        let raw = entry
            .path()
            .map_err(|e| format!("a tar entry's name: {e}"))?
            .into_owned();
        let Some(mut rel) = safe_relative(&raw) else {
            return Err(format!(
                "refusing tar entry {}: it leaves the destination",
                raw.display()
            ));
        };
        if let Some(new_root) = rename {
            let mut parts = rel.components();
            parts.next();
            let rest = parts.as_path();
            rel = if rest.as_os_str().is_empty() {
                PathBuf::from(new_root)
            } else {
                Path::new(new_root).join(rest)
            };
        }
        let target = if rel.as_os_str().is_empty() {
            dir.to_path_buf()
        } else {
            dir.join(&rel)
        };
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("creating {}: {e}", parent.display()))?;
        }
        if entry.header().entry_type().is_dir() && target.is_dir() {
            // An existing folder keeps its place; its mode follows the archive.
            if let Ok(mode) = entry.header().mode() {
                use std::os::unix::fs::PermissionsExt;
                let _ = std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode));
            }
            continue;
        }
        entry.set_preserve_permissions(true);
        entry.set_preserve_mtime(true);
        entry.set_unpack_xattrs(false);
        entry
            .unpack(&target)
            .map_err(|e| format!("writing {}: {e}", target.display()))?;
    }
    Ok(())
}

/// Write a tar of `path` to `out`, its root entry named `name` (`.` for its content).
pub fn pack(out: impl Write, path: &Path, name: &str) -> std::result::Result<(), String> {
    let meta = std::fs::symlink_metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut b = tar::Builder::new(out);
    b.follow_symlinks(false);
    let r = if meta.is_dir() {
        b.append_dir_all(name, path)
    } else if name == "." {
        return Err(format!("{}: not a directory", path.display()));
    } else {
        b.append_path_with_name(path, name)
    };
    r.map_err(|e| format!("archiving {}: {e}", path.display()))?;
    b.into_inner()
        .and_then(|mut w| w.flush())
        .map_err(|e| format!("writing the tar stream: {e}"))
}

/// The helper's work once inside the container's root: `out PATH NAME` writes a tar of
/// PATH to stdout; `in DEST NAME` unpacks stdin's tar of a copy named NAME to DEST (into it
/// when it is a folder, else as it); `in-raw DEST` unpacks stdin's tar into folder DEST.
fn helper_work(args: &[String]) -> std::result::Result<(), String> {
    match args {
        [mode, path, name] if mode == "out" => {
            pack(std::io::stdout().lock(), Path::new(path), name)
        }
        [mode, dest] if mode == "in-raw" => {
            let dest = Path::new(dest);
            if !dest.is_dir() {
                return Err(format!(
                    "{}: the destination of a tar stream must be an existing directory",
                    dest.display()
                ));
            }
            unpack_into(std::io::stdin().lock(), dest, None)
        }
        [mode, dest, name] if mode == "in" => {
            let dest_path = Path::new(dest);
            if dest_path.is_dir() {
                return unpack_into(std::io::stdin().lock(), dest_path, None);
            }
            if dest.ends_with('/') {
                return Err(format!("{dest}: no such directory"));
            }
            let parent = dest_path.parent().unwrap_or(Path::new("/"));
            if !parent.is_dir() {
                return Err(format!("{}: no such directory", parent.display()));
            }
            let new_name = dest_path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .ok_or_else(|| format!("{dest}: names no file"))?;
            if name == "." {
                std::fs::create_dir(dest_path).map_err(|e| format!("creating {dest}: {e}"))?;
                return unpack_into(std::io::stdin().lock(), dest_path, None);
            }
            unpack_into(std::io::stdin().lock(), parent, Some(&new_name))
        }
        _ => Err(format!("bad arguments {args:?}")),
    }
}

/// Run as the copy helper when the arguments say so (`aac __aac-copy-helper PID MODE ...`);
/// returns the process exit code then. Call first thing in `main`.
pub fn copy_helper_main() -> Option<u8> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) != Some(COPY_HELPER_ARG) {
        return None;
    }
    let result = (|| {
        let pid: u32 = args
            .get(2)
            .and_then(|p| p.parse().ok())
            .ok_or("missing PID")?;
        let root = format!("/proc/{pid}/root");
        // A container with a user namespace of its own (the process backend's) owns its
        // filesystems there: join it (still single-threaded), as its root or first user.
        let user_ns = own_user_namespace(pid)?;
        nix::unistd::chroot(root.as_str()).map_err(|e| format!("entering {root}: {e}"))?;
        nix::unistd::chdir("/").map_err(|e| format!("entering {root}: {e}"))?;
        if let Some((ns, uid, gid)) = user_ns {
            nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWUSER)
                .map_err(|e| format!("joining the user namespace of {pid}: {e}"))?;
            let _ = nix::unistd::setgroups(&[]);
            let gid = nix::unistd::Gid::from_raw(gid);
            let uid = nix::unistd::Uid::from_raw(uid);
            nix::unistd::setresgid(gid, gid, gid).map_err(|e| format!("setgid: {e}"))?;
            nix::unistd::setresuid(uid, uid, uid).map_err(|e| format!("setuid: {e}"))?;
        }
        // Files made here are as their modes in the archive say.
        nix::sys::stat::umask(nix::sys::stat::Mode::empty());
        helper_work(&args[3..])
    })();
    match result {
        Ok(()) => Some(0),
        Err(e) => {
            eprintln!("{e}");
            Some(1)
        }
    }
}

/// The user namespace of `pid` when it is not ours, with the IDs to take in it: 0 when
/// mapped, else the first mapped one.
fn own_user_namespace(pid: u32) -> std::result::Result<Option<(std::fs::File, u32, u32)>, String> {
    use std::os::unix::fs::MetadataExt;
    let theirs = format!("/proc/{pid}/ns/user");
    let (a, b) = match (
        std::fs::metadata("/proc/self/ns/user"),
        std::fs::metadata(&theirs),
    ) {
        (Ok(a), Ok(b)) => (a, b),
        (_, Err(e)) => return Err(format!("{theirs}: {e}")),
        (Err(e), _) => return Err(format!("/proc/self/ns/user: {e}")),
    };
    if a.ino() == b.ino() && a.dev() == b.dev() {
        return Ok(None);
    }
    let inside = |file: &str| -> u32 {
        let map = std::fs::read_to_string(format!("/proc/{pid}/{file}")).unwrap_or_default();
        let ranges: Vec<(u32, u32)> = map
            .lines()
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                let start = f.next()?.parse().ok()?;
                let _host: u32 = f.next()?.parse().ok()?;
                let len = f.next()?.parse().ok()?;
                Some((start, len))
            })
            .collect();
        if ranges.iter().any(|(s, l)| *s == 0 && *l > 0) {
            0
        } else {
            ranges.first().map_or(0, |(s, _)| *s)
        }
    };
    let ns = std::fs::File::open(&theirs).map_err(|e| format!("{theirs}: {e}"))?;
    Ok(Some((ns, inside("uid_map"), inside("gid_map"))))
}

impl Engine {
    /// The PID whose root a copy enters: the main process of a running container.
    async fn copy_pid(&self, c: &Container) -> Result<u32> {
        let c = self.ensure_monitor(self.reload(c)).await;
        match c.status.pid {
            Some(pid) if self.is_running(&c).await => Ok(pid),
            _ => Err(EngineError::State(format!(
                "container {} is not running: aac cp copies to and from running containers",
                c.rec.name
            ))),
        }
    }

    fn helper(&self, pid: u32, args: &[&str]) -> Result<Command> {
        let mut cmd = Command::new(helper_binary()?);
        cmd.arg(COPY_HELPER_ARG).arg(pid.to_string()).args(args);
        Ok(cmd)
    }

    /// Copy `src` (a path inside the container) to `dest` on the host, docker's way: into
    /// `dest` when it is a folder, else as `dest`; a tar of it on stdout for `Stream`.
    pub async fn copy_from(&self, c: &Container, src: &str, dest: HostSide) -> Result<()> {
        let pid = self.copy_pid(c).await?;
        let name = copy_name(src)?;
        let (unpack_dir, rename) = match &dest {
            HostSide::Stream => (None, None),
            HostSide::Path(d) if d.is_dir() => (Some(d.clone()), None),
            HostSide::Path(d) => {
                let parent = match d.parent() {
                    Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                    _ => PathBuf::from("."),
                };
                if !parent.is_dir() {
                    return Err(EngineError::Invalid(format!(
                        "{}: no such directory",
                        parent.display()
                    )));
                }
                let new = d
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .ok_or_else(|| {
                        EngineError::Invalid(format!("{}: names no file", d.display()))
                    })?;
                if name == "." {
                    std::fs::create_dir(d).map_err(crate::io::io_err("creating", d))?;
                    (Some(d.clone()), None)
                } else {
                    (Some(parent), Some(new))
                }
            }
        };
        let mut cmd = self.helper(pid, &["out", src, &name])?;
        cmd.stdin(Stdio::null()).stderr(Stdio::piped());
        cmd.stdout(if unpack_dir.is_some() {
            Stdio::piped()
        } else {
            Stdio::inherit()
        });
        let label = format!("{}:{src}", c.rec.name);
        tokio::task::spawn_blocking(move || -> Result<()> {
            let mut child = cmd
                .spawn()
                .map_err(|e| EngineError::Invalid(format!("copying {label}: {e}")))?;
            let unpacked = match (&unpack_dir, child.stdout.take()) {
                (Some(dir), Some(out)) => unpack_into(out, dir, rename.as_deref()),
                _ => Ok(()),
            };
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            let status = child
                .wait()
                .map_err(|e| EngineError::Invalid(format!("copying {label}: {e}")))?;
            // A helper cut off by our failing side dies of SIGPIPE: our error says why.
            unpacked.map_err(|e| EngineError::Invalid(format!("copying {label}: {e}")))?;
            if !status.success() {
                return Err(EngineError::Invalid(format!(
                    "copying {label}: {}",
                    err.trim()
                )));
            }
            Ok(())
        })
        .await
        .map_err(|e| EngineError::State(format!("copying: {e}")))?
    }

    /// Copy `src` on the host (or a tar stream on stdin) to `dest` inside the container:
    /// into `dest` when it is a folder, else as `dest`.
    pub async fn copy_to(&self, c: &Container, src: HostSide, dest: &str) -> Result<()> {
        let pid = self.copy_pid(c).await?;
        let label = format!("{}:{dest}", c.rec.name);
        let (mut cmd, source) = match &src {
            HostSide::Stream => (self.helper(pid, &["in-raw", dest])?, None),
            HostSide::Path(p) => {
                if std::fs::symlink_metadata(p).is_err() {
                    return Err(EngineError::Invalid(format!(
                        "{}: no such file or directory",
                        p.display()
                    )));
                }
                let name = copy_name(&p.to_string_lossy())?;
                (
                    self.helper(pid, &["in", dest, &name])?,
                    Some((p.clone(), name)),
                )
            }
        };
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
        cmd.stdin(if source.is_some() {
            Stdio::piped()
        } else {
            Stdio::inherit()
        });
        tokio::task::spawn_blocking(move || -> Result<()> {
            let mut child = cmd
                .spawn()
                .map_err(|e| EngineError::Invalid(format!("copying to {label}: {e}")))?;
            let packed = match (source, child.stdin.take()) {
                (Some((path, name)), Some(stdin)) => pack(stdin, &path, &name),
                _ => Ok(()),
            };
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            let status = child
                .wait()
                .map_err(|e| EngineError::Invalid(format!("copying to {label}: {e}")))?;
            // The helper's error first: it explains our broken pipe.
            if !status.success() {
                return Err(EngineError::Invalid(format!(
                    "copying to {label}: {}",
                    err.trim()
                )));
            }
            packed.map_err(|e| EngineError::Invalid(format!("copying to {label}: {e}")))
        })
        .await
        .map_err(|e| EngineError::State(format!("copying: {e}")))?
    }
}
