//! Watching containers: `aac stats`, `aac top`, `aac events`.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant, SystemTime};

use aac_runtime::engine::Container;
use aac_runtime::events::{Event, EventFilter, EventType};
use aac_runtime::logs::parse_time_arg;
use aac_runtime::stats::{self, CgroupLayout, Labeled, Sample, StatsRow};
use anyhow::{anyhow, Context as _};
use clap::{Args, ValueEnum};
use serde::Serialize;

use crate::context::Ctx;
use crate::exit::CliResult;

/// How often the live table is refreshed, and the window CPU % is measured over.
const INTERVAL: Duration = Duration::from_secs(1);
/// How often `aac events` looks at the journal.
const EVENTS_POLL: Duration = Duration::from_millis(100);

#[derive(Clone, Debug, Default)]
pub enum StatsFormat {
    /// docker's columns.
    #[default]
    Table,
    /// One JSON object per container and reading (docker's fields plus the raw figures).
    Json,
    /// Prometheus text exposition format, printed once (for scrapers and node_exporter's
    /// textfile collector).
    Prometheus,
    /// A Go template over docker's stats fields (`{{.Name}} {{.CPUPerc}}`).
    Template(crate::format::Template),
}

impl std::str::FromStr for StatsFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<StatsFormat, String> {
        match s.trim() {
            "prometheus" => Ok(StatsFormat::Prometheus),
            other => Ok(match other.parse::<crate::format::Format>()? {
                crate::format::Format::Table => StatsFormat::Table,
                crate::format::Format::Json => StatsFormat::Json,
                crate::format::Format::Template(t) => StatsFormat::Template(t),
            }),
        }
    }
}

/// Headings of `stats` templates.
const STATS_HEADINGS: &[(&str, &str)] = &[
    ("ID", "CONTAINER ID"),
    ("Container", "CONTAINER"),
    ("Name", "NAME"),
    ("CPUPerc", "CPU %"),
    ("MemUsage", "MEM USAGE / LIMIT"),
    ("MemPerc", "MEM %"),
    ("NetIO", "NET I/O"),
    ("BlockIO", "BLOCK I/O"),
    ("PIDs", "PIDS"),
];

#[derive(Args, Debug)]
#[command(
    long_about = "Show the resource usage of containers, refreshed every second like \
                  `docker stats`: CPU %, memory usage / limit, memory %, network I/O, block I/O \
                  and PIDs. Figures come from the container's cgroup (v1, v2 or hybrid) and its \
                  network namespace.\n\n\
                  CPU % is the share of one CPU used over the last second (200% = two CPUs \
                  busy). Memory usage excludes the page cache the way docker does: it is the \
                  cgroup's usage minus its inactive file pages (total_inactive_file on cgroup \
                  v1, inactive_file on v2), so files the container merely read do not count. A \
                  container without a memory limit shows the host's memory as its limit. NET \
                  I/O counts every interface of the container's network namespace but lo; a \
                  container on the host network shows 0B."
)]
pub struct StatsArgs {
    /// Show all containers (default shows running ones).
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Print one reading and exit (CPU % is still measured over one second).
    #[arg(long)]
    pub no_stream: bool,
    /// Output format: table, json, prometheus, or a Go template ('table {{.Name}}\t{{.CPUPerc}}').
    #[arg(long, default_value = "table")]
    pub format: String,
    /// Containers (names or IDs); default: every running one.
    pub names: Vec<String>,
}

#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum TopFormat {
    #[default]
    Table,
    Json,
}

#[derive(Args, Debug)]
#[command(trailing_var_arg = true)]
pub struct TopArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = TopFormat::Table)]
    pub format: TopFormat,
    /// Container name or ID.
    pub name: String,
    /// ps options, accepted for docker compatibility and ignored (aac reads /proc itself and
    /// always shows UID, PID, PPID, STAT, TIME, CMD).
    #[arg(allow_hyphen_values = true)]
    pub ps_options: Vec<String>,
}

#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum EventsFormat {
    /// `TIME container TYPE ID (attributes)` lines.
    #[default]
    Text,
    /// One JSON object per event.
    Json,
}

#[derive(Args, Debug)]
#[command(
    long_about = "Show what happens to containers (create, start, die with its exit code, oom, \
                  health_status, restart, kill, stop, rm, egress-denied) as it happens. With \
                  --since, first the stored events from the on-disk journal (bounded: about \
                  the last 2 MiB of events). With --until, stop at that time."
)]
pub struct EventsArgs {
    /// Show stored events since this time (10m, 2026-11-25T10:00:00Z, UNIX seconds).
    #[arg(long)]
    pub since: Option<String>,
    /// Stop at this time (a time in the past prints stored events and exits).
    #[arg(long)]
    pub until: Option<String>,
    /// Filter: name=NAME, container=NAME|ID, type=TYPE or event=TYPE (repeatable; values of
    /// one key are alternatives).
    #[arg(short = 'f', long = "filter", value_name = "KEY=VALUE")]
    pub filters: Vec<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = EventsFormat::Text)]
    pub format: EventsFormat,
}

// ---------------------------------------------------------------------------------------------
// stats

#[derive(Serialize)]
struct JsonRow<'a> {
    #[serde(flatten)]
    row: &'a StatsRow,
    /// CPU % as a number (absent for a first reading).
    #[serde(rename = "CPUPercent", skip_serializing_if = "Option::is_none")]
    cpu_percent: Option<f64>,
    /// The raw reading (bytes, nanoseconds).
    #[serde(rename = "Sample")]
    sample: &'a Sample,
}

/// Write `text` to stdout; false when stdout is gone (a closed pipe), to stop quietly.
fn emit(text: &str) -> bool {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes()).is_ok() && out.flush().is_ok()
}

pub async fn stats(ctx: &Ctx, args: StatsArgs) -> CliResult<u8> {
    let format: StatsFormat = crate::format::parse_arg(&args.format)?;
    let engine = ctx.engine()?;
    let layout = CgroupLayout::detect()?;
    let cpus = stats::online_cpus();
    let host_mem = stats::host_memory();
    let mut watched = engine.watched(&args.names, args.all)?;
    let read_one = |layout: &CgroupLayout, w: &Container| engine.sample(layout, w);

    if matches!(format, StatsFormat::Prometheus) {
        let readings: Vec<Sample> = watched.iter().map(|w| read_one(&layout, w)).collect();
        let labeled: Vec<Labeled<'_>> = watched
            .iter()
            .zip(&readings)
            .map(|(w, s)| Labeled {
                name: &w.rec.name,
                id: &w.rec.id,
                sample: s,
            })
            .collect();
        emit(&stats::prometheus_text(&labeled));
        return Ok(0);
    }

    let terminal = std::io::stdout().is_terminal();
    let mut previous: HashMap<String, Sample> = watched
        .iter()
        .map(|w| (w.rec.id.clone(), read_one(&layout, w)))
        .collect();
    let mut next_tick = Instant::now() + INTERVAL;
    loop {
        tokio::time::sleep_until(next_tick.into()).await;
        next_tick += INTERVAL;
        let mut rows = Vec::with_capacity(watched.len());
        let mut json = String::new();
        let mut current = HashMap::with_capacity(watched.len());
        for w in &watched {
            let s = read_one(&layout, w);
            let cpu = previous
                .get(&w.rec.id)
                .filter(|p| p.cpu_usage_ns > 0 || s.cpu_usage_ns == 0)
                .map(|p| stats::cpu_percent(p, &s, cpus));
            let row = StatsRow::new(&w.rec.id, &w.rec.name, &s, cpu, host_mem);
            if matches!(format, StatsFormat::Json) {
                let line = serde_json::to_string(&JsonRow {
                    row: &row,
                    cpu_percent: cpu,
                    sample: &s,
                })
                .context("json")?;
                json.push_str(&line);
                json.push('\n');
            }
            rows.push(row);
            current.insert(w.rec.id.clone(), s);
        }
        let text = match &format {
            StatsFormat::Json => json,
            StatsFormat::Template(t) => {
                let items: Vec<serde_json::Value> = rows
                    .iter()
                    .map(|r| {
                        let mut v = serde_json::to_value(r).unwrap_or_default();
                        v["Container"] = v["Name"].clone();
                        v
                    })
                    .collect();
                t.render_all(&items, STATS_HEADINGS)?
            }
            _ if terminal && !args.no_stream => {
                format!("\x1b[2J\x1b[H{}", stats::format_stats_table(&rows))
            }
            _ => stats::format_stats_table(&rows),
        };
        if !emit(&text) || args.no_stream {
            return Ok(0);
        }
        previous = current;
        if args.names.is_empty() {
            // Containers come and go: look again (new ones get their first reading now).
            watched = engine.watched(&[], args.all)?;
            for w in &watched {
                if !previous.contains_key(&w.rec.id) {
                    previous.insert(w.rec.id.clone(), read_one(&layout, w));
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// top

pub async fn top(ctx: &Ctx, args: TopArgs) -> CliResult<u8> {
    let engine = ctx.engine()?;
    let e = engine.load(&args.name)?;
    let rows = engine
        .top(&e)
        .with_context(|| format!("listing the processes of {}", e.rec.name))?;
    let text = match args.format {
        TopFormat::Table => stats::format_top_table(&rows),
        TopFormat::Json => serde_json::to_string_pretty(&rows).context("json")? + "\n",
    };
    emit(&text);
    Ok(0)
}

// ---------------------------------------------------------------------------------------------
// events

/// Turn `--filter` arguments into an [`EventFilter`].
fn parse_filters(filters: &[String]) -> anyhow::Result<EventFilter> {
    let mut f = EventFilter::default();
    for raw in filters {
        let (k, v) = raw
            .split_once('=')
            .ok_or_else(|| anyhow!("--filter {raw:?}: expected KEY=VALUE"))?;
        match k {
            "name" | "container" => f.containers.push(v.to_string()),
            // docker's `type=container` names the kind of object: every aac event is one.
            "type" if v == "container" => {}
            "type" | "event" => f.types.push(
                v.parse::<EventType>()
                    .map_err(|e| anyhow!("--filter {raw:?}: {e}"))?,
            ),
            _ => {
                return Err(anyhow!(
                    "--filter {raw:?}: unknown key {k:?} (name, container, type, event)"
                ))
            }
        }
    }
    Ok(f)
}

/// docker's text form: `TIME container TYPE ID (key=value, ..., name=NAME)`.
fn event_text(e: &Event) -> String {
    let mut attrs: Vec<String> = e
        .attributes
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    attrs.push(format!("name={}", e.name));
    format!(
        "{} container {} {} ({})",
        e.time,
        e.kind,
        e.id,
        attrs.join(", ")
    )
}

fn event_line(e: &Event, format: EventsFormat) -> anyhow::Result<String> {
    Ok(match format {
        EventsFormat::Text => event_text(e),
        EventsFormat::Json => serde_json::to_string(e)?,
    } + "\n")
}

pub async fn events(ctx: &Ctx, args: EventsArgs) -> CliResult<u8> {
    let now = SystemTime::now();
    let time = |v: &Option<String>, flag: &str| -> anyhow::Result<Option<SystemTime>> {
        v.as_deref()
            .map(|s| parse_time_arg(s, now).map_err(|e| anyhow!("{flag}: {e}")))
            .transpose()
    };
    let since = time(&args.since, "--since")?;
    let until = time(&args.until, "--until")?;
    let mut filter = parse_filters(&args.filters)?;
    filter.until = until;

    let (past, mut follower) = match since {
        Some(s) => ctx.engine()?.events(Some(s), filter)?,
        None => ctx.engine()?.events(None, filter)?,
    };
    let mut text = String::new();
    for e in &past {
        text.push_str(&event_line(e, args.format)?);
    }
    if !emit(&text) {
        return Ok(0);
    }
    loop {
        if until.is_some_and(|u| SystemTime::now() > u) {
            // A last look for events stamped before the deadline but written just after it.
            let mut text = String::new();
            for e in follower.poll() {
                text.push_str(&event_line(&e, args.format)?);
            }
            emit(&text);
            return Ok(0);
        }
        tokio::time::sleep(EVENTS_POLL).await;
        let mut text = String::new();
        for e in follower.poll() {
            text.push_str(&event_line(&e, args.format)?);
        }
        if !text.is_empty() && !emit(&text) {
            return Ok(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_parse() {
        let f = parse_filters(&[
            "name=web".into(),
            "type=die".into(),
            "event=oom".into(),
            "type=container".into(),
        ])
        .unwrap();
        assert_eq!(f.containers, ["web"]);
        assert_eq!(f.types, [EventType::Die, EventType::Oom]);
        assert!(parse_filters(&["type=boom".into()]).is_err());
        assert!(parse_filters(&["color=red".into()]).is_err());
        assert!(parse_filters(&["name".into()]).is_err());
    }

    #[test]
    fn event_text_like_docker() {
        let mut e = Event::new(EventType::Die, "abc", "web").with("exitCode", 3);
        e.time = "2026-01-01T00:00:00Z".into();
        assert_eq!(
            event_text(&e),
            "2026-01-01T00:00:00Z container die abc (exitCode=3, name=web)"
        );
    }
}
