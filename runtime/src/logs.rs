//! Container logs in docker's json-file format, rotated by size.
//!
//! Each line of output becomes one JSON object per line:
//! `{"log":"hello\n","stream":"stdout","time":"2026-11-25T01:02:03.123456789Z"}`.
//! The current file is `json.log`; rotation renames it to `json.log.1`, `json.log.1` to
//! `json.log.2`, ... and drops the oldest, keeping `max_file` files in all.
//!
//! The writer never blocks the container on a log problem: when a write fails (a full disk),
//! the line is dropped and counted, and the count is reported in the container's status.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

/// Name of the current log file inside a container's folder.
pub const LOG_FILE: &str = "json.log";
/// Longest line kept whole; longer output is split into several entries, as docker does.
pub const MAX_LINE: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdout,
    Stderr,
}

/// One log entry as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub log: String,
    pub stream: Stream,
    /// RFC 3339 with nanoseconds, UTC.
    pub time: String,
}

impl Entry {
    pub fn timestamp(&self) -> Option<SystemTime> {
        humantime::parse_rfc3339_weak(self.time.trim_end_matches('Z')).ok()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> LogError {
    let path = path.to_path_buf();
    move |source| LogError::Io { op, path, source }
}

/// Writes entries for one container, rotating by size.
pub struct LogWriter {
    dir: PathBuf,
    max_size: u64,
    max_file: u32,
    file: Option<File>,
    size: u64,
    partial: [Vec<u8>; 2],
    /// Lines that could not be written (full disk, I/O error).
    pub dropped: u64,
}

impl LogWriter {
    /// Open (append to) `dir/json.log`.
    pub fn open(dir: &Path, max_size: u64, max_file: u32) -> Result<LogWriter, LogError> {
        fs::create_dir_all(dir).map_err(io_err("creating", dir))?;
        let path = dir.join(LOG_FILE);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_err("opening", &path))?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(LogWriter {
            dir: dir.to_path_buf(),
            max_size: max_size.max(1),
            max_file: max_file.max(1),
            file: Some(file),
            size,
            partial: [Vec::new(), Vec::new()],
            dropped: 0,
        })
    }

    /// Feed raw output of `stream`; complete lines are written, the rest is kept until its
    /// newline arrives (or it reaches [`MAX_LINE`]).
    pub fn write(&mut self, stream: Stream, mut data: &[u8]) {
        let idx = stream as usize;
        while !data.is_empty() {
            let room = MAX_LINE - self.partial[idx].len();
            let take = data.len().min(room);
            match data[..take].iter().position(|&b| b == b'\n') {
                Some(nl) => {
                    self.partial[idx].extend_from_slice(&data[..=nl]);
                    data = &data[nl + 1..];
                }
                None => {
                    self.partial[idx].extend_from_slice(&data[..take]);
                    data = &data[take..];
                    if self.partial[idx].len() < MAX_LINE {
                        continue;
                    }
                }
            }
            let line = std::mem::take(&mut self.partial[idx]);
            self.write_entry(stream, &line, SystemTime::now());
        }
    }

    /// Write out partial lines (at the end of a stream).
    pub fn flush_partial(&mut self) {
        for stream in [Stream::Stdout, Stream::Stderr] {
            let line = std::mem::take(&mut self.partial[stream as usize]);
            if !line.is_empty() {
                self.write_entry(stream, &line, SystemTime::now());
            }
        }
    }

    fn write_entry(&mut self, stream: Stream, line: &[u8], time: SystemTime) {
        let entry = Entry {
            log: String::from_utf8_lossy(line).into_owned(),
            stream,
            time: format_time(time),
        };
        let mut buf = match serde_json::to_vec(&entry) {
            Ok(b) => b,
            Err(_) => {
                self.dropped += 1;
                return;
            }
        };
        buf.push(b'\n');
        if self.size > 0 && self.size + buf.len() as u64 > self.max_size {
            if let Err(e) = self.rotate() {
                tracing::warn!("log rotation failed: {e}");
            }
        }
        let Some(file) = self.file.as_mut() else {
            self.dropped += 1;
            return;
        };
        match file.write_all(&buf) {
            Ok(()) => self.size += buf.len() as u64,
            Err(_) => self.dropped += 1,
        }
    }

    fn rotate(&mut self) -> Result<(), LogError> {
        self.file = None;
        let name = |n: u32| {
            if n == 0 {
                self.dir.join(LOG_FILE)
            } else {
                self.dir.join(format!("{LOG_FILE}.{n}"))
            }
        };
        if self.max_file == 1 {
            let p = name(0);
            let f = OpenOptions::new()
                .write(true)
                .truncate(true)
                .open(&p)
                .map_err(io_err("truncating", &p))?;
            self.file = Some(f);
            self.size = 0;
            return Ok(());
        }
        let _ = fs::remove_file(name(self.max_file - 1));
        for n in (0..self.max_file - 1).rev() {
            let from = name(n);
            if from.exists() {
                fs::rename(&from, name(n + 1)).map_err(io_err("rotating", &from))?;
            }
        }
        let p = name(0);
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&p)
            .map_err(io_err("opening", &p))?;
        self.file = Some(f);
        self.size = 0;
        Ok(())
    }
}

/// RFC 3339 UTC with nanoseconds (`2026-11-25T01:02:03.000000001Z`).
pub fn format_time(t: SystemTime) -> String {
    humantime::format_rfc3339_nanos(t).to_string()
}

/// Which entries to show.
#[derive(Debug, Clone, Default)]
pub struct LogFilter {
    pub since: Option<SystemTime>,
    pub until: Option<SystemTime>,
    /// Only the last N entries (of those within since/until).
    pub tail: Option<usize>,
}

impl LogFilter {
    fn admits(&self, e: &Entry) -> bool {
        if self.since.is_none() && self.until.is_none() {
            return true;
        }
        let Some(t) = e.timestamp() else {
            return false;
        };
        self.since.is_none_or(|s| t >= s) && self.until.is_none_or(|u| t <= u)
    }
}

/// Parse `--since`/`--until`: a duration back from `now` (`10m`, `1h30m`), an RFC 3339 time,
/// or UNIX seconds.
pub fn parse_time_arg(s: &str, now: SystemTime) -> Result<SystemTime, String> {
    let t = s.trim();
    if let Ok(d) = humantime::parse_duration(t) {
        return now
            .checked_sub(d)
            .ok_or_else(|| format!("{s:?} reaches before 1970"));
    }
    if let Ok(secs) = t.parse::<f64>() {
        if secs.is_finite() && secs >= 0.0 {
            return Ok(SystemTime::UNIX_EPOCH + Duration::from_secs_f64(secs));
        }
    }
    humantime::parse_rfc3339_weak(t.trim_end_matches('Z'))
        .map_err(|_| format!("{s:?} is not a time (use 10m, 2026-11-25T10:00:00Z or UNIX seconds)"))
}

/// The log files of a container folder, oldest first.
pub fn log_files(dir: &Path) -> Vec<PathBuf> {
    let mut rotated: Vec<(u32, PathBuf)> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let n = name
                .strip_prefix(LOG_FILE)?
                .strip_prefix('.')?
                .parse()
                .ok()?;
            Some((n, e.path()))
        })
        .collect();
    rotated.sort_by_key(|r| std::cmp::Reverse(r.0));
    let mut out: Vec<PathBuf> = rotated.into_iter().map(|(_, p)| p).collect();
    let current = dir.join(LOG_FILE);
    if current.exists() {
        out.push(current);
    }
    out
}

fn parse_line(line: &str) -> Option<Entry> {
    serde_json::from_str(line.trim_end_matches('\n')).ok()
}

/// Every stored entry that `filter` admits, oldest first.
pub fn read(dir: &Path, filter: &LogFilter) -> Vec<Entry> {
    let mut out = Vec::new();
    for path in log_files(dir) {
        let Ok(f) = File::open(&path) else { continue };
        for line in BufReader::new(f).lines().map_while(Result::ok) {
            if let Some(e) = parse_line(&line) {
                if filter.admits(&e) {
                    out.push(e);
                }
            }
        }
    }
    if let Some(n) = filter.tail {
        let skip = out.len().saturating_sub(n);
        out.drain(..skip);
    }
    out
}

/// Follows `json.log` across rotations, handing out new entries as they are written.
pub struct Follower {
    dir: PathBuf,
    file: Option<File>,
    inode: u64,
    pos: u64,
    pending: Vec<u8>,
    filter: LogFilter,
}

impl Follower {
    /// Start at the current end of the log (after the entries [`read`] returned).
    pub fn from_end(dir: &Path, filter: LogFilter) -> Follower {
        let path = dir.join(LOG_FILE);
        let (file, inode, pos) = match File::open(&path) {
            Ok(f) => {
                let meta = f.metadata().ok();
                let ino = meta
                    .as_ref()
                    .map(std::os::unix::fs::MetadataExt::ino)
                    .unwrap_or(0);
                let len = meta.map(|m| m.len()).unwrap_or(0);
                (Some(f), ino, len)
            }
            Err(_) => (None, 0, 0),
        };
        Follower {
            dir: dir.to_path_buf(),
            file,
            inode,
            pos,
            pending: Vec::new(),
            filter: LogFilter {
                tail: None,
                ..filter
            },
        }
    }

    /// Entries written since the last call. Never misses or repeats an entry across a
    /// rotation: the old file is read to its end before the new one is opened.
    pub fn poll(&mut self) -> Vec<Entry> {
        let mut out = Vec::new();
        self.drain_current(&mut out);
        // Rotated? The path now names a different file.
        let path = self.dir.join(LOG_FILE);
        let current_ino = fs::metadata(&path)
            .ok()
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m));
        if current_ino.is_some() && current_ino != Some(self.inode) {
            // Anything written to the old file before rotation: read it to the end.
            self.drain_current(&mut out);
            if let Ok(f) = File::open(&path) {
                self.inode = current_ino.unwrap_or(0);
                self.file = Some(f);
                self.pos = 0;
                self.pending.clear();
                self.drain_current(&mut out);
            }
        }
        out
    }

    fn drain_current(&mut self, out: &mut Vec<Entry>) {
        let Some(f) = self.file.as_mut() else { return };
        if f.seek(SeekFrom::Start(self.pos)).is_err() {
            return;
        }
        let mut buf = Vec::new();
        if f.read_to_end(&mut buf).is_err() {
            return;
        }
        self.pos += buf.len() as u64;
        self.pending.extend_from_slice(&buf);
        while let Some(nl) = self.pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=nl).collect();
            if let Some(e) = parse_line(&String::from_utf8_lossy(&line)) {
                if self.filter.admits(&e) {
                    out.push(e);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("aac-logs-{tag}-{}", crate::state::new_id()));
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn lines_become_json_entries() {
        let d = tmpdir("lines");
        let mut w = LogWriter::open(&d, 1 << 20, 3).unwrap();
        w.write(Stream::Stdout, b"hello\nwor");
        w.write(Stream::Stderr, b"oops\n");
        w.write(Stream::Stdout, b"ld\n");
        w.write(Stream::Stdout, b"no newline");
        w.flush_partial();
        let all = read(&d, &LogFilter::default());
        let got: Vec<(&str, Stream)> = all.iter().map(|e| (e.log.as_str(), e.stream)).collect();
        assert_eq!(
            got,
            [
                ("hello\n", Stream::Stdout),
                ("oops\n", Stream::Stderr),
                ("world\n", Stream::Stdout),
                ("no newline", Stream::Stdout)
            ]
        );
        let raw = fs::read_to_string(d.join(LOG_FILE)).unwrap();
        let first: serde_json::Value = serde_json::from_str(raw.lines().next().unwrap()).unwrap();
        let time = first["time"].as_str().unwrap();
        assert!(time.ends_with('Z') && time.len() == 30, "{time}");
        assert!(all[0].timestamp().is_some());
        fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn long_lines_are_split() {
        let d = tmpdir("long");
        let mut w = LogWriter::open(&d, 1 << 20, 3).unwrap();
        w.write(Stream::Stdout, &vec![b'x'; MAX_LINE * 2 + 10]);
        w.flush_partial();
        let all = read(&d, &LogFilter::default());
        assert_eq!(all.len(), 3);
        assert_eq!(all[0].log.len(), MAX_LINE);
        fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn rotation_keeps_max_file_and_loses_nothing_in_between() {
        let d = tmpdir("rotate");
        let mut w = LogWriter::open(&d, 4096, 3).unwrap();
        let mut follower = Follower::from_end(&d, LogFilter::default());
        let mut followed = Vec::new();
        for i in 0..2000 {
            w.write(Stream::Stdout, format!("line {i}\n").as_bytes());
            if i % 7 == 0 {
                followed.extend(follower.poll());
            }
        }
        followed.extend(follower.poll());
        let files = log_files(&d);
        assert_eq!(files.len(), 3, "{files:?}");
        // what is still on disk is a gap-free suffix ending with the last line
        let kept = read(&d, &LogFilter::default());
        let nums: Vec<u32> = kept
            .iter()
            .map(|e| e.log.trim().trim_start_matches("line ").parse().unwrap())
            .collect();
        assert_eq!(*nums.last().unwrap(), 1999);
        assert!(nums.windows(2).all(|w| w[1] == w[0] + 1));
        // the follower saw every line exactly once, in order
        let seen: Vec<u32> = followed
            .iter()
            .map(|e| e.log.trim().trim_start_matches("line ").parse().unwrap())
            .collect();
        assert_eq!(seen, (0..2000).collect::<Vec<_>>());
        // tail
        let tail = read(
            &d,
            &LogFilter {
                tail: Some(5),
                ..Default::default()
            },
        );
        assert_eq!(tail.len(), 5);
        assert_eq!(tail[4].log, "line 1999\n");
        fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn since_and_until() {
        let d = tmpdir("since");
        let mut w = LogWriter::open(&d, 1 << 20, 3).unwrap();
        let t0 = SystemTime::now() - Duration::from_secs(3600);
        w.write_entry(Stream::Stdout, b"old\n", t0);
        w.write_entry(Stream::Stdout, b"new\n", SystemTime::now());
        let now = SystemTime::now();
        let since = parse_time_arg("10m", now).unwrap();
        let got = read(
            &d,
            &LogFilter {
                since: Some(since),
                ..Default::default()
            },
        );
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].log, "new\n");
        let until = parse_time_arg(&format_time(t0 + Duration::from_secs(1)), now).unwrap();
        let got = read(
            &d,
            &LogFilter {
                until: Some(until),
                ..Default::default()
            },
        );
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].log, "old\n");
        assert!(parse_time_arg("yesterday-ish", now).is_err());
        fs::remove_dir_all(d).unwrap();
    }
}
