//! `aac scale`, `aac down` and `aac autoscale status`: a scaled agent (spec.scaling) as a
//! whole. The engine and the agent's supervisor do the work; this parses and prints.

use std::time::{Duration, SystemTime};

use aac_runtime::engine::AgentGroup;
use aac_runtime::status::parse_time;
use anyhow::Context as _;
use clap::{Args, Subcommand};

use crate::context::Ctx;
use crate::exit::CliResult;

#[derive(Args, Debug)]
pub struct ScaleArgs {
    /// The agent (its name in agent.yaml).
    pub name: String,
    /// Number of replicas, within spec.scaling.minReplicas..maxReplicas.
    pub replicas: u32,
    /// Seconds to wait until the supervisor runs that many.
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
}

#[derive(Args, Debug)]
pub struct DownArgs {
    /// The agents to remove (every replica, the supervisor, the published ports).
    #[arg(required = true)]
    pub names: Vec<String>,
}

#[derive(Subcommand, Debug)]
pub enum AutoscaleCommand {
    /// Current and desired replicas, metrics and the last decision (kubectl describe hpa).
    Status(AutoscaleStatusArgs),
}

#[derive(Args, Debug)]
pub struct AutoscaleStatusArgs {
    pub name: String,
    /// Print the status as JSON.
    #[arg(long)]
    pub json: bool,
}

pub async fn scale(ctx: &Ctx, args: ScaleArgs) -> CliResult<u8> {
    let engine = ctx.engine()?;
    engine
        .scale(&args.name, args.replicas, Duration::from_secs(args.timeout))
        .await?;
    println!("{} scaled to {}", args.name, args.replicas);
    Ok(0)
}

pub async fn down(ctx: &Ctx, args: DownArgs) -> CliResult<u8> {
    let engine = ctx.engine()?;
    let mut all_ok = true;
    for n in &args.names {
        let r = if engine.is_agent_group(n) {
            engine.down(n).await
        } else {
            // A single-container agent: down is rm -f.
            match engine.load(n) {
                Ok(c) => engine.remove(&c, true).await,
                Err(e) => Err(e),
            }
        };
        match r {
            Ok(()) => println!("{n}"),
            Err(e) => {
                eprintln!("aac: {n}: {e}");
                all_ok = false;
            }
        }
    }
    Ok(u8::from(!all_ok))
}

pub async fn autoscale(ctx: &Ctx, cmd: AutoscaleCommand) -> CliResult<u8> {
    let AutoscaleCommand::Status(args) = cmd;
    let engine = ctx.engine()?;
    let g = engine.agent_group(&args.name).await?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&group_json(&g)).context("json")?
        );
        return Ok(0);
    }
    print!("{}", describe(&g, SystemTime::now()));
    Ok(0)
}

/// The group as `aac inspect`/`autoscale status --json` show it.
pub fn group_json(g: &AgentGroup) -> serde_json::Value {
    serde_json::json!({
        "Name": g.record.name,
        "Id": g.record.id,
        "Created": g.record.created,
        "Backend": g.record.backend,
        "MinReplicas": g.record.min_replicas,
        "MaxReplicas": g.record.max_replicas,
        "CurrentReplicas": g.status.active().count(),
        "DesiredReplicas": g.status.desired,
        "SupervisorPid": g.status.supervisor_pid,
        "SupervisorAlive": g.supervisor_running,
        "Replicas": g.status.replicas,
        "Backends": g.status.backends,
        "Autoscale": g.status.autoscale,
        "Error": g.status.error,
        "Ports": g.record.agent.spec.ports,
    })
}

fn ago(t: &Option<String>, now: SystemTime) -> String {
    t.as_deref()
        .and_then(parse_time)
        .and_then(|t| now.duration_since(t).ok())
        .map(|d| format!("{} ago", aac_runtime::status::human_duration(d)))
        .unwrap_or_else(|| "<none>".into())
}

/// `kubectl describe hpa` in spirit.
pub fn describe(g: &AgentGroup, now: SystemTime) -> String {
    let a = &g.status.autoscale;
    let mut s = String::new();
    let mut line = |k: &str, v: String| s.push_str(&format!("{:<34}{v}\n", format!("{k}:")));
    line("Name", g.record.name.clone());
    line("CreationTimestamp", g.record.created.clone());
    line(
        "Supervisor",
        match (g.supervisor_running, g.status.supervisor_pid) {
            (true, Some(pid)) => format!("running (pid {pid})"),
            _ => "not running".into(),
        },
    );
    line(
        "Autoscaling",
        if a.enabled { "enabled" } else { "disabled" }.into(),
    );
    line(
        "Metrics",
        if a.metrics.is_empty() {
            "<none>".into()
        } else {
            "( current / target )".into()
        },
    );
    let mut out = s;
    for m in &a.metrics {
        let current = match (m.current_utilization, &m.error) {
            (Some(u), _) => format!("{u}%"),
            (None, Some(e)) => format!("<unknown> ({e})"),
            (None, None) => "<unknown>".into(),
        };
        out.push_str(&format!(
            "  resource {} on replicas  (as a percentage of request):  {current} / {}%\n",
            m.resource, m.target_utilization
        ));
    }
    let mut line = |k: &str, v: String| out.push_str(&format!("{:<34}{v}\n", format!("{k}:")));
    line("Min replicas", g.record.min_replicas.to_string());
    line("Max replicas", g.record.max_replicas.to_string());
    line(
        "Behavior",
        format!(
            "scale up after {}, scale down after {}",
            humantime::format_duration(a.scale_up_window),
            humantime::format_duration(a.scale_down_window)
        ),
    );
    line(
        "Replicas",
        format!(
            "{} current / {} desired",
            g.status.active().count(),
            g.status.desired
        ),
    );
    if let Some(d) = &a.last_decision {
        line(
            "Last decision",
            format!(
                "{} ({}): proposed {}, desired {}: {}",
                ago(&a.last_decision_time, now),
                a.last_decision_time.clone().unwrap_or_default(),
                d.proposed,
                d.desired,
                d.reason
            ),
        );
    }
    line(
        "Last scale",
        format!(
            "{}{}",
            ago(&a.last_scale_time, now),
            a.last_scale_reason
                .as_ref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        ),
    );
    if let Some(e) = &g.status.error {
        line("Error", e.clone());
    }
    out.push_str("Backends:\n");
    for b in &g.status.backends {
        out.push_str(&format!(
            "  {:<20} {:<22} {:<14} active {} total {}\n",
            b.name,
            b.address,
            if b.in_rotation {
                "in rotation"
            } else {
                "out of rotation"
            },
            b.active_connections,
            b.total_connections
        ));
    }
    out
}
