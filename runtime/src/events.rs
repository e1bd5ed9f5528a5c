//! The event journal behind `aac events`: what happened to containers, one JSON object per
//! line in `<data>/events.jsonl`.
//!
//! ```text
//! {"time":"2026-11-25T01:02:03.123456789Z","type":"die","id":"4f3a...","name":"web","attributes":{"exitCode":"137"}}
//! ```
//!
//! Many processes append (each container's monitor, the CLI). Every append takes an exclusive
//! `flock` on `<data>/events.lock`, checks the size, rotates when the journal passed
//! [`MAX_SIZE`] (`events.jsonl` -> `events.jsonl.1`, replacing the older one) and writes the
//! line with one `write()` on an `O_APPEND` descriptor. Readers take the lock shared, so a read
//! never straddles a rotation. [`EventFollower`] tails the journal without a lock, across
//! rotations, by way of [`crate::logs::LineTailer`].

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::logs::{format_time, LineTailer};
use crate::state::StateDirs;

use crate::io::io_err;

/// The journal's file name under the data directory.
pub const EVENTS_FILE: &str = "events.jsonl";
/// The previous journal, kept after a rotation.
pub const ROTATED_FILE: &str = "events.jsonl.1";
const LOCK_FILE: &str = "events.lock";
/// Size past which the journal is rotated.
pub const MAX_SIZE: u64 = 1 << 20;
/// Longest attribute value kept (longer ones are cut), so that lines stay small.
pub const MAX_ATTRIBUTE: usize = 512;

#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error(transparent)]
    Io(#[from] crate::io::IoError),
    #[error("encoding event: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("unknown event type {0:?} (one of: {list})", list = EventType::ALL.map(|t| t.as_str()).join(", "))]
    UnknownType(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventType {
    Create,
    Start,
    Die,
    Oom,
    HealthStatus,
    Restart,
    Kill,
    Stop,
    Rm,
    Pause,
    Unpause,
    Rename,
    /// The egress policy refused a name or a destination (`spec.network.security`).
    #[serde(rename = "egress-denied")]
    EgressDenied,
    /// A scaled agent's replica count changed (`aac up`, `aac scale`, the autoscaler).
    Scale,
    /// Limits or the restart policy changed live (`aac update`).
    Update,
}

impl EventType {
    pub const ALL: [EventType; 15] = [
        EventType::Create,
        EventType::Start,
        EventType::Die,
        EventType::Oom,
        EventType::HealthStatus,
        EventType::Restart,
        EventType::Kill,
        EventType::Stop,
        EventType::Rm,
        EventType::Pause,
        EventType::Unpause,
        EventType::Rename,
        EventType::EgressDenied,
        EventType::Scale,
        EventType::Update,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Create => "create",
            EventType::Start => "start",
            EventType::Die => "die",
            EventType::Oom => "oom",
            EventType::HealthStatus => "health_status",
            EventType::Restart => "restart",
            EventType::Kill => "kill",
            EventType::Stop => "stop",
            EventType::Rm => "rm",
            EventType::Pause => "pause",
            EventType::Unpause => "unpause",
            EventType::Rename => "rename",
            EventType::EgressDenied => "egress-denied",
            EventType::Scale => "scale",
            EventType::Update => "update",
        }
    }
}

impl std::fmt::Display for EventType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for EventType {
    type Err = EventError;
    fn from_str(s: &str) -> Result<EventType, EventError> {
        EventType::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| EventError::UnknownType(s.to_string()))
    }
}

/// One journal entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// RFC 3339 with nanoseconds, UTC.
    pub time: String,
    #[serde(rename = "type")]
    pub kind: EventType,
    pub id: String,
    pub name: String,
    /// `exitCode`, `health`, `signal`, ...
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
}

impl Event {
    /// An event happening now.
    pub fn new(kind: EventType, id: &str, name: &str) -> Event {
        Event {
            time: format_time(SystemTime::now()),
            kind,
            id: id.to_string(),
            name: name.to_string(),
            attributes: BTreeMap::new(),
        }
    }

    /// Add an attribute (values longer than [`MAX_ATTRIBUTE`] bytes are cut).
    pub fn with(mut self, key: &str, value: impl ToString) -> Event {
        let mut v = value.to_string();
        if v.len() > MAX_ATTRIBUTE {
            let mut cut = MAX_ATTRIBUTE;
            while !v.is_char_boundary(cut) {
                cut -= 1;
            }
            v.truncate(cut);
        }
        self.attributes.insert(key.to_string(), v);
        self
    }

    pub fn timestamp(&self) -> Option<SystemTime> {
        humantime::parse_rfc3339_weak(self.time.trim_end_matches('Z')).ok()
    }
}

/// Which events to show (`--filter type=die --filter container=web --until 10m`).
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    /// Any of these types (all when empty).
    pub types: Vec<EventType>,
    /// Any of these containers, by name, full ID or ID prefix (all when empty).
    pub containers: Vec<String>,
    pub until: Option<SystemTime>,
}

impl EventFilter {
    pub fn admits(&self, e: &Event) -> bool {
        (self.types.is_empty() || self.types.contains(&e.kind))
            && (self.containers.is_empty()
                || self
                    .containers
                    .iter()
                    .any(|c| *c == e.name || (!c.is_empty() && e.id.starts_with(c.as_str()))))
            && self
                .until
                .is_none_or(|u| e.timestamp().is_some_and(|t| t <= u))
    }

    fn admits_since(&self, e: &Event, since: Option<SystemTime>) -> bool {
        since.is_none_or(|s| e.timestamp().is_some_and(|t| t >= s)) && self.admits(e)
    }
}

fn lock(dirs: &StateDirs, exclusive: bool) -> Result<nix::fcntl::Flock<File>, EventError> {
    crate::state::create_private_dir(&dirs.data)?;
    let path = dirs.data.join(LOCK_FILE);
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io_err("opening", &path))?;
    let arg = if exclusive {
        nix::fcntl::FlockArg::LockExclusive
    } else {
        nix::fcntl::FlockArg::LockShared
    };
    nix::fcntl::Flock::lock(f, arg)
        .map_err(|(_, errno)| io_err("locking", &path)(errno.into()).into())
}

/// Add `event` to the journal (rotating it when it passed [`MAX_SIZE`]).
pub fn append(dirs: &StateDirs, event: &Event) -> Result<(), EventError> {
    let mut line = serde_json::to_vec(event)?;
    line.push(b'\n');
    let _guard = lock(dirs, true)?;
    let path = dirs.data.join(EVENTS_FILE);
    let size = match fs::metadata(&path) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
        Err(e) => return Err(io_err("reading", &path)(e).into()),
    };
    if size > 0 && size + line.len() as u64 > MAX_SIZE {
        let old = dirs.data.join(ROTATED_FILE);
        fs::rename(&path, &old).map_err(io_err("rotating", &path))?;
    }
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(io_err("opening", &path))?;
    // One write() of the whole line: O_APPEND makes it land at the end in one piece.
    Ok(f.write_all(&line).map_err(io_err("writing", &path))?)
}

fn read_locked(dirs: &StateDirs, since: Option<SystemTime>, filter: &EventFilter) -> Vec<Event> {
    let mut out = Vec::new();
    for name in [ROTATED_FILE, EVENTS_FILE] {
        let Ok(f) = File::open(dirs.data.join(name)) else {
            continue;
        };
        for line in BufReader::new(f).lines().map_while(Result::ok) {
            match serde_json::from_str::<Event>(&line) {
                Ok(e) if filter.admits_since(&e, since) => out.push(e),
                Ok(_) => {}
                Err(e) => tracing::debug!("skipping a bad event line: {e}"),
            }
        }
    }
    out
}

/// The stored events at or after `since` that `filter` admits, oldest first.
pub fn read(
    dirs: &StateDirs,
    since: Option<SystemTime>,
    filter: &EventFilter,
) -> Result<Vec<Event>, EventError> {
    let _guard = lock(dirs, false)?;
    Ok(read_locked(dirs, since, filter))
}

/// Tails the journal: hands out each event appended after it started, once, across rotations.
pub struct EventFollower {
    tailer: LineTailer,
    filter: EventFilter,
}

impl EventFollower {
    /// Follow from the current end of the journal.
    pub fn from_end(dirs: &StateDirs, filter: EventFilter) -> Result<EventFollower, EventError> {
        let _guard = lock(dirs, false)?;
        Ok(EventFollower::at_end_locked(dirs, filter))
    }

    fn at_end_locked(dirs: &StateDirs, filter: EventFilter) -> EventFollower {
        EventFollower {
            tailer: LineTailer::from_end(
                &dirs.data.join(EVENTS_FILE),
                &dirs.data.join(ROTATED_FILE),
            ),
            filter,
        }
    }

    /// The stored events (as [`read`]) and a follower starting right after them, taken together
    /// so that no event falls between the two (`aac events --since 1h` then new ones).
    pub fn read_then_follow(
        dirs: &StateDirs,
        since: Option<SystemTime>,
        filter: EventFilter,
    ) -> Result<(Vec<Event>, EventFollower), EventError> {
        let _guard = lock(dirs, false)?;
        let past = read_locked(dirs, since, &filter);
        Ok((past, EventFollower::at_end_locked(dirs, filter)))
    }

    /// Events appended since the last call that the filter admits.
    pub fn poll(&mut self) -> Vec<Event> {
        self.tailer
            .poll_lines()
            .iter()
            .filter_map(|l| serde_json::from_str::<Event>(l).ok())
            .filter(|e| self.filter.admits(e))
            .collect()
    }
}
