//! Running CNI plugins (spec 1.0.0): one executable per plugin, parameters in `CNI_*`
//! environment variables, the network configuration as JSON on stdin and the result (or an
//! error object) as JSON on stdout.
//!
//! A network configuration list ("conflist") is run as a chain: `ADD` runs the plugins in order,
//! each receiving the previous one's result as `prevResult`; `DEL` runs them in reverse order,
//! each receiving the cached result of the `ADD`.

use std::ffi::OsString;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::NetError;

/// The CNI spec version aac speaks.
pub const CNI_VERSION: &str = "1.0.0";

/// Where the plugin binaries are searched: `AAC_CNI_PATH` (a `:`-separated list) when set, else
/// `/usr/lib/cni` then `/opt/cni/bin`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginDirs(pub Vec<PathBuf>);

impl PluginDirs {
    pub fn from_env() -> PluginDirs {
        match std::env::var_os("AAC_CNI_PATH").filter(|v| !v.is_empty()) {
            Some(v) => PluginDirs(std::env::split_paths(&v).collect()),
            None => PluginDirs(vec![
                PathBuf::from("/usr/lib/cni"),
                PathBuf::from("/opt/cni/bin"),
            ]),
        }
    }

    /// The executable of plugin `kind` (`bridge`, `portmap`, ...).
    pub fn find(&self, kind: &str) -> Result<PathBuf, NetError> {
        if kind.is_empty() || kind.contains('/') {
            return Err(NetError::PluginNotFound {
                plugin: kind.to_string(),
                path: self.display(),
            });
        }
        self.0
            .iter()
            .map(|d| d.join(kind))
            .find(|p| p.is_file())
            .ok_or_else(|| NetError::PluginNotFound {
                plugin: kind.to_string(),
                path: self.display(),
            })
    }

    fn display(&self) -> String {
        self.0
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(":")
    }

    fn cni_path(&self) -> OsString {
        std::env::join_paths(&self.0).unwrap_or_else(|_| OsString::from(self.display()))
    }
}

/// The `CNI_*` parameters of one invocation.
#[derive(Debug, Clone, Copy)]
pub struct Invocation<'a> {
    pub container_id: &'a str,
    pub netns: &'a Path,
    pub ifname: &'a str,
}

/// A CNI result (the parts aac reads; the full JSON is kept wherever it is stored).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CniResult {
    #[serde(default)]
    pub cni_version: String,
    #[serde(default)]
    pub interfaces: Vec<CniInterface>,
    #[serde(default)]
    pub ips: Vec<CniIp>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CniInterface {
    pub name: String,
    #[serde(default)]
    pub mac: String,
    /// Set for interfaces inside the container's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CniIp {
    /// Index into `interfaces`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
    /// CIDR notation: `10.88.0.2/24`.
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
}

impl CniResult {
    pub fn parse(v: &Value) -> Result<CniResult, serde_json::Error> {
        CniResult::deserialize(v)
    }

    /// The container's address: the first IP on an interface inside the sandbox (else the
    /// first IP at all).
    pub fn ip(&self) -> Option<IpAddr> {
        let in_sandbox = |ip: &&CniIp| {
            ip.interface
                .and_then(|i| self.interfaces.get(i))
                .is_some_and(|i| i.sandbox.is_some())
        };
        self.ips
            .iter()
            .find(in_sandbox)
            .or_else(|| self.ips.first())
            .and_then(|ip| ip.address.parse::<ipnet::IpNet>().ok())
            .map(|n| n.addr())
    }

    pub fn gateway(&self) -> Option<IpAddr> {
        self.ips.iter().find_map(|ip| ip.gateway)
    }
}

/// The configuration one plugin of `list` gets: its own object plus the list's `name` and
/// `cniVersion`, the `runtimeConfig` entries for the capabilities it declares, and
/// `prevResult`.
pub fn plugin_config(
    list: &Value,
    plugin: &Value,
    runtime_config: &Value,
    prev: Option<&Value>,
) -> Value {
    let mut conf: Map<String, Value> = plugin.as_object().cloned().unwrap_or_default();
    conf.insert(
        "cniVersion".into(),
        list.get("cniVersion")
            .cloned()
            .unwrap_or_else(|| json!(CNI_VERSION)),
    );
    conf.insert(
        "name".into(),
        list.get("name").cloned().unwrap_or_else(|| json!("")),
    );
    if let Some(caps) = plugin.get("capabilities").and_then(Value::as_object) {
        let mut rc = Map::new();
        for (cap, enabled) in caps {
            if enabled.as_bool() == Some(true) {
                if let Some(v) = runtime_config.get(cap) {
                    rc.insert(cap.clone(), v.clone());
                }
            }
        }
        if !rc.is_empty() {
            conf.insert("runtimeConfig".into(), Value::Object(rc));
        }
    }
    if let Some(prev) = prev {
        conf.insert("prevResult".into(), prev.clone());
    }
    Value::Object(conf)
}

fn plugins(list: &Value) -> &[Value] {
    list.get("plugins")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn plugin_type(plugin: &Value) -> &str {
    plugin.get("type").and_then(Value::as_str).unwrap_or("")
}

/// Run one plugin. Returns its result for `ADD` (`None` for other commands).
pub fn exec(
    dirs: &PluginDirs,
    command: &'static str,
    inv: Invocation<'_>,
    conf: &Value,
) -> Result<Option<Value>, NetError> {
    let kind = conf.get("type").and_then(Value::as_str).unwrap_or("");
    let exe = dirs.find(kind)?;
    let body = serde_json::to_vec(conf).map_err(|e| NetError::Plugin {
        plugin: kind.to_string(),
        command,
        code: None,
        msg: format!("encoding its configuration: {e}"),
    })?;
    let io = |e: std::io::Error| NetError::Io(crate::io::IoError::new("running", exe.clone(), e));
    // portmap, bridge (ipMasq) and firewall run iptables; make sure it can be found.
    let mut path = std::env::var_os("PATH").unwrap_or_default();
    for extra in ["/usr/sbin", "/sbin", "/usr/bin", "/bin"] {
        if !std::env::split_paths(&path).any(|p| p == Path::new(extra)) {
            let mut parts: Vec<PathBuf> = std::env::split_paths(&path).collect();
            parts.push(PathBuf::from(extra));
            path = std::env::join_paths(parts).unwrap_or(path);
        }
    }
    tracing::debug!(plugin = kind, command, container = inv.container_id, "CNI");
    let mut child = Command::new(&exe)
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", inv.container_id)
        .env("CNI_NETNS", inv.netns)
        .env("CNI_IFNAME", inv.ifname)
        .env("CNI_PATH", dirs.cni_path())
        .env("PATH", path)
        .env_remove("CNI_ARGS")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(io)?;
    if let Some(mut stdin) = child.stdin.take() {
        // A plugin that exits without reading gives EPIPE here; its exit status tells more.
        let _ = stdin.write_all(&body);
    }
    let out = child.wait_with_output().map_err(io)?;
    if !out.status.success() {
        let (code, msg) = match serde_json::from_slice::<Value>(&out.stdout) {
            Ok(v) => {
                let mut msg = v
                    .get("msg")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                if let Some(d) = v.get("details").and_then(Value::as_str) {
                    if !d.is_empty() {
                        msg = format!("{msg}: {d}");
                    }
                }
                (v.get("code").and_then(Value::as_u64), msg)
            }
            Err(_) => (None, String::new()),
        };
        let msg = if msg.is_empty() {
            let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
            if stderr.is_empty() {
                format!("exited with {}", out.status)
            } else {
                stderr
            }
        } else {
            msg
        };
        return Err(NetError::Plugin {
            plugin: kind.to_string(),
            command,
            code: code.and_then(|c| u32::try_from(c).ok()),
            msg,
        });
    }
    if command != "ADD" {
        return Ok(None);
    }
    serde_json::from_slice(&out.stdout)
        .map(Some)
        .map_err(|source| NetError::BadResult {
            plugin: kind.to_string(),
            source,
        })
}

/// `ADD` the whole list. On failure the plugins are deleted again (in reverse order) before
/// the error is returned.
pub fn add_list(
    dirs: &PluginDirs,
    inv: Invocation<'_>,
    list: &Value,
    runtime_config: &Value,
) -> Result<Value, NetError> {
    let mut prev: Option<Value> = None;
    for plugin in plugins(list) {
        let conf = plugin_config(list, plugin, runtime_config, prev.as_ref());
        match exec(dirs, "ADD", inv, &conf) {
            Ok(Some(result)) => prev = Some(result),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(
                    plugin = plugin_type(plugin),
                    container = inv.container_id,
                    "CNI ADD failed, rolling back: {e}"
                );
                for err in del_list(dirs, inv, list, runtime_config, prev.as_ref()) {
                    tracing::warn!(container = inv.container_id, "rollback: {err}");
                }
                return Err(e);
            }
        }
    }
    prev.ok_or_else(|| NetError::Plugin {
        plugin: list
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        command: "ADD",
        code: None,
        msg: "the network configuration has no plugins".into(),
    })
}

/// `DEL` the whole list. Every plugin runs even when one fails; the failures are returned.
///
/// The plugins' DELs are independent of one another (each gets the cached ADD result, none the
/// output of another), so they run at the same time: a detach costs the slowest plugin, not the
/// sum of all.
pub fn del_list(
    dirs: &PluginDirs,
    inv: Invocation<'_>,
    list: &Value,
    runtime_config: &Value,
    prev: Option<&Value>,
) -> Vec<NetError> {
    let confs: Vec<Value> = plugins(list)
        .iter()
        .rev()
        .map(|plugin| plugin_config(list, plugin, runtime_config, prev))
        .collect();
    std::thread::scope(|s| {
        let running: Vec<_> = confs
            .iter()
            .map(|conf| s.spawn(move || exec(dirs, "DEL", inv, conf)))
            .collect();
        running
            .into_iter()
            .filter_map(|t| match t.join() {
                Ok(r) => r.err(),
                Err(p) => std::panic::resume_unwind(p),
            })
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_config_merges_list_fields_capabilities_and_prev_result() {
        let list = json!({"cniVersion": "1.0.0", "name": "n", "plugins": []});
        let plugin =
            json!({"type": "portmap", "capabilities": {"portMappings": true, "bandwidth": false}});
        let rc = json!({"portMappings": [{"hostPort": 1, "containerPort": 2, "protocol": "tcp"}], "bandwidth": {}});
        let prev = json!({"cniVersion": "1.0.0", "ips": []});
        let c = plugin_config(&list, &plugin, &rc, Some(&prev));
        assert_eq!(c["name"], "n");
        assert_eq!(c["cniVersion"], "1.0.0");
        assert_eq!(c["runtimeConfig"]["portMappings"][0]["hostPort"], 1);
        assert!(c["runtimeConfig"].get("bandwidth").is_none());
        assert_eq!(c["prevResult"], prev);
        let c = plugin_config(&list, &json!({"type": "bridge"}), &rc, None);
        assert!(c.get("runtimeConfig").is_none());
        assert!(c.get("prevResult").is_none());
    }

    #[test]
    fn result_ip_prefers_the_sandbox_interface() {
        let r = CniResult::parse(&json!({
            "cniVersion": "1.0.0",
            "interfaces": [{"name": "br"}, {"name": "veth"}, {"name": "eth0", "sandbox": "/x"}],
            "ips": [
                {"interface": 0, "address": "10.1.0.1/24"},
                {"interface": 2, "address": "10.1.0.7/24", "gateway": "10.1.0.1"}
            ]
        }))
        .unwrap();
        assert_eq!(r.ip(), Some("10.1.0.7".parse().unwrap()));
        assert_eq!(r.gateway(), Some("10.1.0.1".parse().unwrap()));
        assert_eq!(CniResult::default().ip(), None);
    }

    #[test]
    fn missing_plugin_is_a_clear_error() {
        let dirs = PluginDirs(vec![PathBuf::from("/nonexistent-cni")]);
        let err = dirs.find("bridge").unwrap_err();
        assert!(err.to_string().contains("bridge"), "{err}");
        assert!(err.to_string().contains("/nonexistent-cni"), "{err}");
        assert!(dirs.find("../bin/sh").is_err());
    }
}
