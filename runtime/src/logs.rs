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
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::io::io_err;

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

/// [`Entry`] as written: borrowed, so a line costs no copy before it is encoded.
#[derive(Serialize)]
struct EntryRef<'a> {
    log: &'a str,
    stream: Stream,
    time: &'a str,
}

impl Entry {
    pub fn timestamp(&self) -> Option<SystemTime> {
        humantime::parse_rfc3339_weak(self.time.trim_end_matches('Z')).ok()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error(transparent)]
    Io(#[from] crate::io::IoError),
}

/// Writes entries for one container, rotating by size.
pub struct LogWriter {
    dir: PathBuf,
    max_size: u64,
    max_file: u32,
    file: Option<File>,
    size: u64,
    partial: [Vec<u8>; 2],
    /// Encoded entries not written yet: one `write` per chunk of output, not per line.
    pending: Vec<u8>,
    pending_lines: u64,
    /// Lines that could not be written (full disk, I/O error).
    pub dropped: u64,
}

impl LogWriter {
    /// Open (append to) `dir/json.log`.
    pub fn open(dir: &Path, max_size: u64, max_file: u32) -> Result<LogWriter, LogError> {
        crate::state::create_private_dir(dir)?;
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
            pending: Vec::new(),
            pending_lines: 0,
            dropped: 0,
        })
    }

    /// Feed raw output of `stream`; complete lines are written, the rest is kept until its
    /// newline arrives (or it reaches [`MAX_LINE`]). The lines of one call share one
    /// timestamp (they arrived in one read) and one `write`.
    pub fn write(&mut self, stream: Stream, mut data: &[u8]) {
        let idx = stream as usize;
        let mut time: Option<String> = None;
        while !data.is_empty() {
            let room = MAX_LINE - self.partial[idx].len();
            let take = data.len().min(room);
            let nl = memchr::memchr(b'\n', &data[..take]);
            let end = match nl {
                Some(nl) => nl + 1,
                None => take,
            };
            let complete = nl.is_some() || self.partial[idx].len() + take >= MAX_LINE;
            if !complete {
                self.partial[idx].extend_from_slice(&data[..end]);
                break;
            }
            let t = time.get_or_insert_with(|| format_time(SystemTime::now()));
            if self.partial[idx].is_empty() {
                // The common case: a whole line in this read, encoded from where it lies.
                let t = std::mem::take(t);
                self.write_entry(stream, &data[..end], &t);
                time = Some(t);
            } else {
                let mut line = std::mem::take(&mut self.partial[idx]);
                line.extend_from_slice(&data[..end]);
                let t = std::mem::take(t);
                self.write_entry(stream, &line, &t);
                time = Some(t);
                line.clear();
                self.partial[idx] = line;
            }
            data = &data[end..];
        }
        self.flush();
    }

    /// Write out partial lines (at the end of a stream).
    pub fn flush_partial(&mut self) {
        for stream in [Stream::Stdout, Stream::Stderr] {
            let mut line = std::mem::take(&mut self.partial[stream as usize]);
            if !line.is_empty() {
                self.write_entry(stream, &line, &format_time(SystemTime::now()));
                line.clear();
            }
            self.partial[stream as usize] = line;
        }
        self.flush();
    }

    /// Encode one entry into the pending buffer, rotating first when it would not fit.
    fn write_entry(&mut self, stream: Stream, line: &[u8], time: &str) {
        // Valid UTF-8 (the usual case) is borrowed as it is; serde_json escapes it.
        let log = String::from_utf8_lossy(line);
        let entry = EntryRef {
            log: &log,
            stream,
            time,
        };
        let start = self.pending.len();
        if serde_json::to_writer(&mut self.pending, &entry).is_err() {
            self.pending.truncate(start);
            self.dropped += 1;
            return;
        }
        self.pending.push(b'\n');
        let len = (self.pending.len() - start) as u64;
        let before = self.size + start as u64;
        if before > 0 && before + len > self.max_size {
            // Everything before this entry goes to the current file, then it rotates.
            let entry_bytes = self.pending.split_off(start);
            self.flush();
            if let Err(e) = self.rotate() {
                tracing::warn!("log rotation failed: {e}");
            }
            self.pending = entry_bytes;
        }
        self.pending_lines += 1;
    }

    /// Write the pending entries with one system call.
    fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let lines = std::mem::take(&mut self.pending_lines);
        if self.file.is_none() {
            // A rotation or an earlier error left no file: try again (the disk may have room
            // by now), else drop the lines.
            let p = self.dir.join(LOG_FILE);
            if let Ok(f) = OpenOptions::new().create(true).append(true).open(&p) {
                self.size = f.metadata().map(|m| m.len()).unwrap_or(0);
                self.file = Some(f);
            }
        }
        let Some(file) = self.file.as_mut() else {
            self.dropped += lines;
            self.pending.clear();
            return;
        };
        match file.write_all(&self.pending) {
            Ok(()) => self.size += self.pending.len() as u64,
            Err(e) => {
                if self.dropped == 0 {
                    tracing::warn!(
                        "writing the log in {}: {e}; dropping lines",
                        self.dir.display()
                    );
                }
                self.dropped += lines;
                // A part may have made it: cut it off so the next line starts on a line of
                // its own (and the space is given back).
                let _ = file.set_len(self.size);
            }
        }
        self.pending.clear();
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
    tailer: LineTailer,
    filter: LogFilter,
}

impl Follower {
    /// Start at the current end of the log (new entries only).
    pub fn from_end(dir: &Path, filter: LogFilter) -> Follower {
        Follower {
            tailer: LineTailer::from_end(&dir.join(LOG_FILE), &dir.join(format!("{LOG_FILE}.1"))),
            filter: LogFilter {
                tail: None,
                ..filter
            },
        }
    }

    /// Start at the beginning of the oldest file: the first [`Follower::poll`] returns every
    /// stored entry (as [`read`] would, `tail` applied), later ones what was written since.
    /// No entry falls between the stored ones and the followed ones, or shows up in both.
    pub fn from_start(dir: &Path, filter: LogFilter) -> Follower {
        Follower {
            tailer: LineTailer::from_start(&dir.join(LOG_FILE), &dir.join(format!("{LOG_FILE}.1"))),
            filter,
        }
    }

    /// Entries written since the last call. Never misses or repeats an entry across
    /// rotations, as long as the file it was reading has not been dropped (more than
    /// `max-file - 1` rotations between two calls).
    pub fn poll(&mut self) -> Vec<Entry> {
        let mut out: Vec<Entry> = self
            .tailer
            .poll_lines()
            .iter()
            .filter_map(|l| parse_line(l))
            .filter(|e| self.filter.admits(e))
            .collect();
        if let Some(n) = self.filter.tail.take() {
            let skip = out.len().saturating_sub(n);
            out.drain(..skip);
        }
        out
    }
}

fn inode_of(path: &Path) -> Option<u64> {
    fs::metadata(path)
        .ok()
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
}

fn file_inode(f: &File) -> u64 {
    f.metadata()
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
        .unwrap_or(0)
}

/// Follows a file of lines that its writer rotates by renaming it to `rotated` (`<current>.1`),
/// the older ones to `<current>.2`, ... and starting a new one (logs, the event journal).
/// Hands out each complete line once, in order, across rotations: when the path names a new
/// file, the old one (still open) is read to its end first, then every file that came after
/// it, oldest first, found by inode among the rotated ones.
pub struct LineTailer {
    current: PathBuf,
    rotated: PathBuf,
    /// The file being read and its inode (kept open, so the inode is never reused).
    file: Option<(File, u64)>,
    pos: u64,
    pending: Vec<u8>,
}

impl LineTailer {
    /// Start at the current end of `current` (or at its beginning once it appears).
    pub fn from_end(current: &Path, rotated: &Path) -> LineTailer {
        let mut t = LineTailer {
            current: current.to_path_buf(),
            rotated: rotated.to_path_buf(),
            file: None,
            pos: 0,
            pending: Vec::new(),
        };
        if let Ok(f) = File::open(current) {
            t.pos = f.metadata().map(|m| m.len()).unwrap_or(0);
            let ino = file_inode(&f);
            t.file = Some((f, ino));
        }
        t
    }

    /// Start at the beginning of the oldest rotated file.
    pub fn from_start(current: &Path, rotated: &Path) -> LineTailer {
        LineTailer {
            current: current.to_path_buf(),
            rotated: rotated.to_path_buf(),
            file: None,
            pos: 0,
            pending: Vec::new(),
        }
    }

    fn name(&self, n: u32) -> PathBuf {
        match n {
            0 => self.current.clone(),
            1 => self.rotated.clone(),
            n => PathBuf::from(format!("{}.{n}", self.current.display())),
        }
    }

    /// The files as they are now, newest first, each opened once (by inode). Taken again when
    /// a rotation happened while it was being taken.
    fn snapshot(&self) -> Vec<(File, u64)> {
        let mut files: Vec<(File, u64)> = Vec::new();
        for _attempt in 0..10 {
            files.clear();
            for n in 0..10_000 {
                let Ok(f) = File::open(self.name(n)) else {
                    if n == 0 {
                        continue;
                    }
                    break;
                };
                let ino = file_inode(&f);
                if !files.iter().any(|(_, i)| *i == ino) {
                    files.push((f, ino));
                }
            }
            // We hold the first file open, so its inode cannot be reused: the same inode at
            // the current path means no rotation happened meanwhile.
            let first = files.first().map(|(_, i)| *i);
            if first.is_none() || inode_of(&self.current) == first {
                break;
            }
        }
        files
    }

    /// Complete lines (without their newline) written since the last call.
    pub fn poll_lines(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        self.drain_current(&mut out);
        let current_ino = inode_of(&self.current);
        match (&self.file, current_ino) {
            (Some((_, ino)), Some(cur)) if *ino == cur => return out,
            (Some(_), None) => return out,
            (None, None) if inode_of(&self.rotated).is_none() => return out,
            _ => {}
        }
        // The path names a new file (or we start from the beginning). Whatever reached the
        // old file before the rename: read it.
        self.drain_current(&mut out);
        let mut files = self.snapshot();
        let newer = match &self.file {
            Some((_, ino)) => files
                .iter()
                .position(|(_, i)| i == ino)
                .unwrap_or(files.len()),
            None => files.len(),
        };
        files.truncate(newer);
        // Oldest first; each read whole, the newest stays open.
        while let Some((f, ino)) = files.pop() {
            self.file = Some((f, ino));
            self.pos = 0;
            self.pending.clear();
            self.drain_current(&mut out);
        }
        out
    }

    fn drain_current(&mut self, out: &mut Vec<String>) {
        let Some((f, _)) = self.file.as_mut() else {
            return;
        };
        // Truncated in place (a writer keeping a single file): start over from its beginning.
        if f.metadata().is_ok_and(|m| m.len() < self.pos) {
            self.pos = 0;
            self.pending.clear();
        }
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
            out.push(String::from_utf8_lossy(&line[..line.len() - 1]).into_owned());
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
    fn escapes_and_invalid_utf8_as_docker_writes_them() {
        let d = tmpdir("escape");
        let mut w = LogWriter::open(&d, 1 << 20, 3).unwrap();
        w.write(
            Stream::Stdout,
            b"a \"q\" \\ \t\x01 \xc3\xa9\nbad \xff\xfe\nthird",
        );
        w.write(Stream::Stdout, b" part\n");
        let raw = fs::read_to_string(d.join(LOG_FILE)).unwrap();
        let lines: Vec<&str> = raw.lines().collect();
        // Quotes, backslashes and control characters escaped; valid UTF-8 kept as it is.
        assert!(
            lines[0].starts_with(r#"{"log":"a \"q\" \\ \t\u0001 é\n","stream":"stdout","time":""#),
            "{raw}"
        );
        let all = read(&d, &LogFilter::default());
        let got: Vec<&str> = all.iter().map(|e| e.log.as_str()).collect();
        assert_eq!(
            got,
            [
                "a \"q\" \\ \t\u{1} \u{e9}\n",
                "bad \u{fffd}\u{fffd}\n",
                "third part\n"
            ]
        );
        // The lines of one read share a timestamp.
        assert_eq!(all[0].time, all[1].time);
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
    fn follower_catches_up_over_several_rotations_between_polls() {
        let d = tmpdir("multi");
        let mut w = LogWriter::open(&d, 2048, 5).unwrap();
        for i in 0..10 {
            w.write(Stream::Stdout, format!("old {i}\n").as_bytes());
        }
        let mut from_start = Follower::from_start(
            &d,
            LogFilter {
                tail: Some(3),
                ..Default::default()
            },
        );
        let first: Vec<String> = from_start.poll().into_iter().map(|e| e.log).collect();
        assert_eq!(first, ["old 7\n", "old 8\n", "old 9\n"]);
        let mut follower = Follower::from_end(&d, LogFilter::default());
        let mut seen = Vec::new();
        let mut seen2 = Vec::new();
        let mut n = 0;
        for round in 0..20 {
            // about three rotations (of four possible) between two polls
            for _ in 0..(60 + round) {
                w.write(Stream::Stdout, format!("line {n}\n").as_bytes());
                n += 1;
            }
            seen.extend(follower.poll());
            seen2.extend(from_start.poll());
        }
        let nums = |v: &[Entry]| -> Vec<u32> {
            v.iter()
                .map(|e| e.log.trim().trim_start_matches("line ").parse().unwrap())
                .collect()
        };
        assert_eq!(nums(&seen), (0..n).collect::<Vec<_>>());
        assert_eq!(nums(&seen2), (0..n).collect::<Vec<_>>());
        fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn full_disk_drops_and_counts_lines() {
        let d = tmpdir("full");
        fs::remove_dir_all(&d).unwrap();
        fs::create_dir_all(&d).unwrap();
        std::os::unix::fs::symlink("/dev/full", d.join(LOG_FILE)).unwrap();
        let mut w = LogWriter::open(&d, 1 << 20, 3).unwrap();
        for i in 0..10 {
            w.write(Stream::Stdout, format!("line {i}\n").as_bytes());
        }
        assert_eq!(w.dropped, 10);
        fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn follower_starts_over_when_a_single_file_is_truncated() {
        let d = tmpdir("truncate");
        let mut w = LogWriter::open(&d, 4096, 1).unwrap();
        for i in 0..100 {
            w.write(Stream::Stdout, format!("before {i}\n").as_bytes());
        }
        let mut follower = Follower::from_end(&d, LogFilter::default());
        // Enough to truncate once (4 KiB), not twice.
        for i in 0..60 {
            w.write(Stream::Stdout, format!("after {i}\n").as_bytes());
        }
        let on_disk = read(&d, &LogFilter::default());
        assert!(on_disk.len() < 60, "expected a truncation");
        assert_eq!(follower.poll(), on_disk);
        fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn since_and_until() {
        let d = tmpdir("since");
        let mut w = LogWriter::open(&d, 1 << 20, 3).unwrap();
        let t0 = SystemTime::now() - Duration::from_secs(3600);
        w.write_entry(Stream::Stdout, b"old\n", &format_time(t0));
        w.write_entry(Stream::Stdout, b"new\n", &format_time(SystemTime::now()));
        w.flush();
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
