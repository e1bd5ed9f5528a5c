//! The JSON shapes docker users and scripts know: `inspect` (Id, Name, State, Config,
//! HostConfig, NetworkSettings, Mounts, RestartCount, ...) and the `ps` row (ID, Names,
//! Image, Status, ...), with aac's own fields beside them. `--format` templates and `json`
//! output read these.

use std::time::SystemTime;

use aac_runtime::agent::{Probe, RestartPolicy, VolumeType};
use aac_runtime::engine::{Container, Engine};
use aac_runtime::logs;
use aac_runtime::record::ContainerRecord;
use aac_runtime::status::{human_duration, parse_time, Phase};
use serde_json::{json, Map, Value};

/// `ps` headings for `table` templates.
pub const PS_HEADINGS: &[(&str, &str)] = &[
    ("ID", "CONTAINER ID"),
    ("Names", "NAMES"),
    ("Image", "IMAGE"),
    ("Command", "COMMAND"),
    ("CreatedAt", "CREATED AT"),
    ("RunningFor", "CREATED"),
    ("Ports", "PORTS"),
    ("State", "STATE"),
    ("Status", "STATUS"),
    ("Size", "SIZE"),
    ("Labels", "LABELS"),
    ("Mounts", "MOUNTS"),
    ("Networks", "NETWORKS"),
    ("Backend", "BACKEND"),
    ("Agent", "AGENT"),
];

/// Docker's `Config.Env` and friends come from the OCI spec as run.
fn spec_json(rec: &ContainerRecord) -> Value {
    serde_json::to_value(&rec.spec).unwrap_or(Value::Null)
}

pub fn ports_text(rec: &ContainerRecord) -> String {
    rec.ports
        .iter()
        .map(|p| match p.host {
            Some(h) => format!(
                "{}:{}->{}/{}",
                p.host_ip
                    .map(|i| i.to_string())
                    .unwrap_or_else(|| "0.0.0.0".into()),
                h,
                p.container,
                p.protocol.as_str()
            ),
            None => format!("{}/{}", p.container, p.protocol.as_str()),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn ago(t: &str, now: SystemTime) -> String {
    parse_time(t)
        .and_then(|t| now.duration_since(t).ok())
        .map(|d| format!("{} ago", human_duration(d)))
        .unwrap_or_default()
}

fn network_name(engine: &Engine, c: &Container) -> String {
    engine
        .attachment(c)
        .map(|a| a.network)
        .unwrap_or_else(|| c.rec.agent.spec.network.mode.to_string())
}

/// Docker's state word: created, running, restarting, exited.
pub fn state_word(c: &Container) -> &'static str {
    match c.status.phase {
        Phase::Created => "created",
        Phase::Running => "running",
        Phase::Restarting => "restarting",
        Phase::Exited => "exited",
    }
}

/// Health as docker's filter and `ps` say it: starting, healthy, unhealthy, none.
pub fn health_word(c: &Container) -> &'static str {
    match &c.status.health {
        None => "none",
        Some(h) => match h.status {
            aac_runtime::status::HealthStatus::Starting => "starting",
            aac_runtime::status::HealthStatus::Healthy => "healthy",
            aac_runtime::status::HealthStatus::Unhealthy => "unhealthy",
        },
    }
}

/// One `ps` row, docker's field names (`ID` cut to 12 unless `no_trunc`).
pub fn ps_row(
    engine: &Engine,
    c: &Container,
    now: SystemTime,
    no_trunc: bool,
    size: Option<&str>,
) -> Value {
    let rec = &c.rec;
    let paused = engine.is_paused(c);
    let mut cmd = format!("\"{}\"", rec.command.join(" "));
    if !no_trunc && cmd.chars().count() > 22 {
        cmd = cmd.chars().take(20).collect::<String>() + "…\"";
    }
    let labels = rec
        .agent
        .metadata
        .labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let mounts = rec
        .agent
        .spec
        .volumes
        .iter()
        .map(|v| {
            if v.kind == VolumeType::Volume {
                v.source.clone()
            } else {
                v.target.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(",");
    json!({
        "ID": if no_trunc { rec.id.clone() } else { rec.id.chars().take(12).collect() },
        "Names": rec.name,
        "Image": rec.image.clone().unwrap_or_else(|| "-".into()),
        "Command": cmd,
        "CreatedAt": rec.created,
        "RunningFor": ago(&rec.created, now),
        "Ports": ports_text(rec),
        "State": if paused { "paused" } else { state_word(c) },
        "Status": if paused {
            format!("{} (Paused)", c.status.describe(now))
        } else {
            c.status.describe(now)
        },
        "Size": size.unwrap_or(""),
        "Labels": labels,
        "Mounts": mounts,
        "Networks": network_name(engine, c),
        "Backend": rec.backend.to_string(),
    })
}

fn port_key(container: u16, proto: &str) -> String {
    format!("{container}/{proto}")
}

/// `inspect` in docker's shape, aac's own fields beside docker's.
pub fn inspect(engine: &Engine, c: &Container) -> Value {
    // Values of secret-looking variables are shown as `***`.
    let mut shown = c.rec.clone();
    aac_runtime::secrets::redact::record(&mut shown);
    let rec = &shown;
    let st = &c.status;
    let spec = spec_json(rec);
    let process = &spec["process"];
    let agent = &rec.agent;
    let attachment = engine.attachment(c);

    let health = st.health.as_ref().map(|h| {
        json!({
            "Status": health_word(c),
            "FailingStreak": h.failing_streak,
            "Log": h.log.iter().map(|r| json!({
                "Start": r.start,
                "End": r.end,
                "ExitCode": r.exit_code,
                "Output": r.output,
                // aac's own
                "Healthy": r.healthy,
                "HttpStatus": r.http_status,
            })).collect::<Vec<_>>(),
        })
    });
    let paused = engine.is_paused(c);
    let mut state = json!({
        "Status": if paused { "paused" } else { state_word(c) },
        "Running": st.phase == Phase::Running,
        "Paused": paused,
        "Restarting": st.phase == Phase::Restarting,
        "OOMKilled": st.oom_killed,
        "Dead": false,
        "Pid": st.pid.unwrap_or(0),
        "ExitCode": st.exit_code.unwrap_or(0),
        "Error": st.error.clone().unwrap_or_default(),
        "StartedAt": st.started_at.clone().unwrap_or_else(|| "0001-01-01T00:00:00Z".into()),
        "FinishedAt": st.finished_at.clone().unwrap_or_else(|| "0001-01-01T00:00:00Z".into()),
        // aac's own
        "RestartCount": st.restart_count,
        "StoppedByUser": st.stopped_by_user,
        "LogDroppedLines": st.log_dropped_lines,
        "MonitorPid": st.monitor_pid,
        "MonitorAlive": engine.monitor_running(c),
    });
    if let Some(h) = health {
        state["Health"] = h;
    }

    // Ports: docker's map "80/tcp" -> [{HostIp, HostPort}] (null when not published).
    let mut ports = Map::new();
    let mut bindings = Map::new();
    let mut exposed = Map::new();
    for p in &rec.ports {
        let key = port_key(p.container, p.protocol.as_str());
        exposed.insert(key.clone(), json!({}));
        match p.host {
            Some(h) => {
                let b = json!([{
                    "HostIp": p.host_ip.map(|i| i.to_string()).unwrap_or_else(|| "0.0.0.0".into()),
                    "HostPort": h.to_string(),
                }]);
                ports.insert(key.clone(), b.clone());
                bindings.insert(key, b);
            }
            None => {
                ports.entry(key).or_insert(Value::Null);
            }
        }
    }

    let labels: Map<String, Value> = agent
        .metadata
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();

    let mounts: Vec<Value> = agent
        .spec
        .volumes
        .iter()
        .map(|v| {
            let kind = match v.kind {
                VolumeType::Bind | VolumeType::ConfigMap => "bind",
                VolumeType::Volume => "volume",
                VolumeType::Tmpfs => "tmpfs",
            };
            let source = spec["mounts"]
                .as_array()
                .and_then(|ms| {
                    ms.iter()
                        .find(|m| m["destination"].as_str() == Some(v.target.as_str()))
                })
                .and_then(|m| m["source"].as_str().map(str::to_string))
                .unwrap_or_else(|| v.source.clone());
            let mut m = json!({
                "Type": kind,
                "Source": if v.kind == VolumeType::Tmpfs { String::new() } else { source },
                "Destination": v.target,
                "Mode": if v.read_only { "ro" } else { "" },
                "RW": !v.read_only,
                "Propagation": if v.kind == VolumeType::Tmpfs { "" } else { "rprivate" },
            });
            if v.kind == VolumeType::Volume {
                m["Name"] = Value::String(v.source.clone());
                m["Driver"] = Value::String("local".into());
            }
            m
        })
        .collect();

    let (restart_name, restart_max) = match &agent.spec.restart_policy {
        RestartPolicy::No => ("no", 0),
        RestartPolicy::OnFailure { max_retries } => ("on-failure", max_retries.unwrap_or(0)),
        RestartPolicy::Always => ("always", 0),
        RestartPolicy::UnlessStopped => ("unless-stopped", 0),
    };
    let resources = &spec["linux"]["resources"];
    let nano_cpus = match (
        resources["cpu"]["quota"].as_i64(),
        resources["cpu"]["period"].as_u64(),
    ) {
        (Some(q), Some(p)) if q > 0 && p > 0 => (q as u64).saturating_mul(1_000_000_000) / p,
        _ => 0,
    };
    let caps = &process["capabilities"]["bounding"];
    let netmode = network_name(engine, c);

    let mut networks = Map::new();
    if let Some(a) = &attachment {
        if a.ip.is_some() {
            networks.insert(
                a.network.clone(),
                json!({
                    "IPAddress": a.ip.map(|i| i.to_string()).unwrap_or_default(),
                    "Gateway": a.gateway.map(|i| i.to_string()).unwrap_or_default(),
                    "IPPrefixLen": prefix_len(a),
                    "Aliases": [rec.name.clone(), a.hostname.clone()],
                    "DNSNames": [rec.name.clone(), rec.id.chars().take(12).collect::<String>()],
                }),
            );
        }
    }
    let ip = attachment
        .as_ref()
        .and_then(|a| a.ip)
        .map(|i| i.to_string())
        .unwrap_or_default();
    let gateway = attachment
        .as_ref()
        .and_then(|a| a.gateway)
        .map(|i| i.to_string())
        .unwrap_or_default();

    let healthcheck = agent.spec.health_check.as_ref().map(|h| {
        let test = match &h.probe {
            Probe::Command(cmd) => {
                let mut t = vec!["CMD".to_string()];
                t.extend(cmd.iter().cloned());
                t
            }
            Probe::Http { path, port, .. } => {
                vec!["HTTP".into(), format!("http://localhost:{port}{path}")]
            }
            Probe::Tcp { port } => vec!["TCP".into(), port.to_string()],
            Probe::File { path } => vec!["FILE".into(), path.clone()],
        };
        json!({
            "Test": test,
            "Interval": h.interval.as_nanos() as u64,
            "Timeout": h.timeout.as_nanos() as u64,
            "Retries": h.retries,
            "StartPeriod": h.start_period.as_nanos() as u64,
        })
    });

    let user = match (
        process["user"]["uid"].as_u64(),
        process["user"]["gid"].as_u64(),
    ) {
        (Some(0), Some(0)) | (None, _) => String::new(),
        (Some(u), Some(g)) => format!("{u}:{g}"),
        (Some(u), None) => u.to_string(),
    };
    let image = rec.image.clone().unwrap_or_default();
    let cmd = rec.command.clone();
    json!({
        "Id": rec.id,
        "Created": rec.created,
        "Path": cmd.first().cloned().unwrap_or_default(),
        "Args": cmd.iter().skip(1).cloned().collect::<Vec<_>>(),
        "State": state,
        "Image": image,
        "Name": format!("/{}", rec.name),
        "RestartCount": st.restart_count,
        "Driver": rec.backend.storage_driver(),
        "Platform": "linux",
        "LogPath": engine.log_dir(c).join(logs::LOG_FILE),
        "HostConfig": {
            "Binds": agent.spec.volumes.iter()
                .filter(|v| matches!(v.kind, VolumeType::Bind | VolumeType::Volume))
                .map(|v| format!("{}:{}{}", v.source, v.target, if v.read_only { ":ro" } else { "" }))
                .collect::<Vec<_>>(),
            "NetworkMode": netmode,
            "PortBindings": bindings,
            "RestartPolicy": {"Name": restart_name, "MaximumRetryCount": restart_max},
            "AutoRemove": rec.auto_remove,
            "CapAdd": agent.spec.security.capabilities.add,
            "CapDrop": agent.spec.security.capabilities.drop,
            "Dns": agent.spec.network.dns,
            "DnsSearch": agent.spec.network.dns_search,
            "DnsOptions": agent.spec.network.dns_options,
            "Privileged": agent.spec.security.privileged,
            "ReadonlyRootfs": spec["root"]["readonly"].as_bool().unwrap_or(false),
            "Memory": resources["memory"]["limit"].as_i64().unwrap_or(0),
            "MemorySwap": resources["memory"]["swap"].as_i64().unwrap_or(0),
            "NanoCpus": nano_cpus,
            "CpuShares": resources["cpu"]["shares"].as_u64().unwrap_or(0),
            "CpusetCpus": resources["cpu"]["cpus"].as_str().unwrap_or(""),
            "PidsLimit": resources["pids"]["limit"].as_i64(),
            "Runtime": rec.backend.to_string(),
        },
        "Config": {
            "Hostname": spec["hostname"].as_str().unwrap_or(""),
            "User": user,
            "Tty": rec.tty,
            "OpenStdin": rec.stdin,
            "Env": process["env"].as_array().cloned().unwrap_or_default(),
            "Cmd": cmd,
            "Image": image,
            "WorkingDir": process["cwd"].as_str().unwrap_or(""),
            "Labels": labels,
            "ExposedPorts": exposed,
            "Healthcheck": healthcheck,
            "Capabilities": caps,
        },
        "NetworkSettings": {
            "IPAddress": ip,
            "Gateway": gateway,
            "Ports": ports,
            "Networks": networks,
            "SandboxKey": attachment.as_ref().and_then(|a| a.netns.clone()),
        },
        "Mounts": mounts,
        // aac's own
        "Backend": rec.backend,
        "Command": rec.command,
        "Ports": rec.ports,
        "Network": attachment,
        "Egress": aac_runtime::egress::inspect(engine.dirs(), rec),
        "Agent": rec.agent,
        "Spec": rec.spec,
        "Cgroup": rec.cgroup,
    })
}

fn prefix_len(a: &aac_runtime::network::AttachmentRecord) -> u64 {
    // The CNI result's ips[0].address is CIDR.
    a.result
        .as_ref()
        .and_then(|r| r["ips"][0]["address"].as_str())
        .and_then(|s| s.split_once('/'))
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or(0)
}
