//! What the egress enforcement saw: counters and the latest denials in
//! `<data>/containers/<id>/egress.json` (for `aac inspect`), and one `egress-denied` event per
//! denied name or destination in the journal (`aac events`), repeats within
//! [`EVENT_WINDOW`] counted but not journalled again.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

use crate::events::{self, Event, EventType};
use crate::logs::format_time;
use crate::state::{self, Durability, StateDirs};

/// File name of the report in the container's folder.
pub const REPORT_FILE: &str = "egress.json";
/// Denials of one name or destination within this window make one event.
pub const EVENT_WINDOW: Duration = Duration::from_secs(10);
/// How many recent denials the report keeps.
pub const RECENT: usize = 20;

/// One denial.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Denial {
    pub time: String,
    /// `dns` (a name not on the list) or `connection` (a destination not allowed).
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
}

/// The counters, as saved.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Counters {
    /// Queries answered by forwarding (allowed names).
    pub allowed_queries: u64,
    /// Queries answered NXDOMAIN (names not on the list).
    pub denied_queries: u64,
    /// Packets refused by the rules (logged ones; a flood is logged at 100 a second).
    pub denied_connections: u64,
    /// Addresses put into the allow sets (new or refreshed).
    pub allowed_addresses: u64,
    #[serde(default)]
    pub recent: VecDeque<Denial>,
}

pub fn report_path(dirs: &StateDirs, id: &str) -> PathBuf {
    dirs.container_dir(id).join(REPORT_FILE)
}

/// The saved counters of container `id` (zero when none).
pub fn load(dirs: &StateDirs, id: &str) -> Counters {
    state::read_json(&report_path(dirs, id))
        .ok()
        .flatten()
        .unwrap_or_default()
}

/// Counts, journals and saves.
pub struct Reporter {
    dirs: StateDirs,
    id: String,
    name: String,
    path: PathBuf,
    pub counters: Counters,
    dirty: bool,
    last_event: HashMap<String, Instant>,
}

impl Reporter {
    /// Carry on from the saved counters (a new monitor adopting the container).
    pub fn new(dirs: &StateDirs, id: &str, name: &str) -> Reporter {
        Reporter {
            dirs: dirs.clone(),
            id: id.to_string(),
            name: name.to_string(),
            path: report_path(dirs, id),
            counters: load(dirs, id),
            dirty: true,
            last_event: HashMap::new(),
        }
    }

    pub fn allowed_query(&mut self) {
        self.counters.allowed_queries += 1;
        self.dirty = true;
    }

    pub fn allowed_addresses(&mut self, n: usize) {
        self.counters.allowed_addresses += n as u64;
        self.dirty = true;
    }

    /// A query for `host`, not on the list.
    pub fn denied_query(&mut self, host: &str) {
        self.counters.denied_queries += 1;
        self.denial(
            format!("dns:{host}"),
            Denial {
                time: format_time(SystemTime::now()),
                reason: "dns".into(),
                host: Some(host.to_string()),
                address: None,
                port: None,
                protocol: None,
            },
        );
    }

    /// A packet to a destination not allowed; `host` when the resolver knows a name for it.
    pub fn denied_connection(&mut self, d: &super::netlink::Denied, host: Option<String>) {
        self.counters.denied_connections += 1;
        let key = format!("conn:{}:{}:{:?}", d.dst, d.proto, d.port);
        self.denial(
            key,
            Denial {
                time: format_time(SystemTime::now()),
                reason: "connection".into(),
                host,
                address: Some(d.dst.to_string()),
                port: d.port,
                protocol: Some(d.protocol_name()),
            },
        );
    }

    fn denial(&mut self, key: String, d: Denial) {
        self.dirty = true;
        let now = Instant::now();
        let fresh = self
            .last_event
            .get(&key)
            .is_none_or(|t| now.duration_since(*t) >= EVENT_WINDOW);
        if fresh {
            self.last_event.insert(key, now);
            if self.last_event.len() > 4096 {
                self.last_event
                    .retain(|_, t| now.duration_since(*t) < EVENT_WINDOW);
            }
            let mut e =
                Event::new(EventType::EgressDenied, &self.id, &self.name).with("reason", &d.reason);
            if let Some(h) = &d.host {
                e = e.with("host", h);
            }
            if let Some(a) = &d.address {
                e = e.with("address", a);
            }
            if let Some(p) = d.port {
                e = e.with("port", p);
            }
            if let Some(p) = &d.protocol {
                e = e.with("protocol", p);
            }
            if let Err(err) = events::append(&self.dirs, &e) {
                tracing::warn!(container = %self.id, "recording an egress denial: {err}");
            }
            tracing::info!(container = %self.id, reason = %d.reason, host = ?d.host, address = ?d.address, port = ?d.port, "egress denied");
        }
        self.counters.recent.push_back(d);
        while self.counters.recent.len() > RECENT {
            self.counters.recent.pop_front();
        }
    }

    /// Save the counters when they changed. The container's folder is gone once it is
    /// removed: nothing is written then.
    pub fn flush(&mut self) {
        if !self.dirty {
            return;
        }
        self.dirty = false;
        if !self.path.parent().is_some_and(Path::exists) {
            return;
        }
        if let Err(e) = state::write_json_with(&self.path, &self.counters, Durability::Transient) {
            tracing::warn!(container = %self.id, "saving the egress counters: {e}");
        }
    }
}
