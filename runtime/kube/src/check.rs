//! Checks a JSON schema cannot make on a set of manifests: the Deployment's selector picks
//! its template's labels, the HPA scales a Deployment of the set, probe ports are ports of the
//! container, Services and network policies select the pods, and every ConfigMap,
//! PersistentVolumeClaim and volume referred to is there.

use std::collections::{BTreeMap, BTreeSet};

use serde_yaml::Value;

fn s<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    let mut cur = v;
    for p in path {
        cur = cur.get(*p)?;
    }
    Some(cur)
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    s(v, path).and_then(Value::as_str).unwrap_or_default()
}

fn labels(v: Option<&Value>) -> BTreeMap<String, String> {
    v.and_then(Value::as_mapping)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.as_str()?.to_string(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

fn list(v: Option<&Value>) -> &[Value] {
    v.and_then(Value::as_sequence)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn selects(sel: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    !sel.is_empty() && sel.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// A Deployment's pod: template labels, container ports (number, name, protocol).
struct Pod<'a> {
    name: &'a str,
    labels: BTreeMap<String, String>,
    ports: Vec<(u64, String, String)>,
}

/// Every inconsistency found, as text; empty when the set holds together. `secrets_included`
/// says whether referenced Secrets must be in the set too.
pub fn consistency(docs: &[Value], secrets_included: bool) -> Vec<String> {
    let mut problems = Vec::new();
    let kind = |d: &Value| str_at(d, &["kind"]).to_string();
    let named = |k: &str| -> BTreeSet<String> {
        docs.iter()
            .filter(|d| kind(d) == k)
            .map(|d| str_at(d, &["metadata", "name"]).to_string())
            .collect()
    };
    let config_maps: BTreeMap<String, BTreeSet<String>> = docs
        .iter()
        .filter(|d| kind(d) == "ConfigMap")
        .map(|d| {
            let keys = ["data", "binaryData"]
                .iter()
                .flat_map(|k| {
                    d.get(*k)
                        .and_then(Value::as_mapping)
                        .into_iter()
                        .flat_map(|m| m.keys().filter_map(|k| k.as_str().map(str::to_string)))
                })
                .collect();
            (str_at(d, &["metadata", "name"]).to_string(), keys)
        })
        .collect();
    let claims = named("PersistentVolumeClaim");
    let secrets = named("Secret");
    let mut pods = Vec::new();
    for d in docs.iter().filter(|d| kind(d) == "Deployment") {
        let name = str_at(d, &["metadata", "name"]);
        let sel = labels(s(d, &["spec", "selector", "matchLabels"]));
        let tl = labels(s(d, &["spec", "template", "metadata", "labels"]));
        if !selects(&sel, &tl) {
            problems.push(format!("Deployment {name}: the selector {sel:?} does not select the template labels {tl:?}"));
        }
        let pod = s(d, &["spec", "template", "spec"])
            .cloned()
            .unwrap_or(Value::Null);
        let volumes: BTreeMap<String, &Value> = list(pod.get("volumes"))
            .iter()
            .map(|v| (str_at(v, &["name"]).to_string(), v))
            .collect();
        for (vname, v) in &volumes {
            if let Some(c) = s(v, &["configMap", "name"]).and_then(Value::as_str) {
                if !config_maps.contains_key(c) {
                    problems.push(format!("Deployment {name}: volume {vname} uses ConfigMap {c}, which is not in the set"));
                }
            }
            if let Some(c) = s(v, &["persistentVolumeClaim", "claimName"]).and_then(Value::as_str) {
                if !claims.contains(c) {
                    problems.push(format!(
                        "Deployment {name}: volume {vname} uses claim {c}, which is not in the set"
                    ));
                }
            }
            for src in list(s(v, &["projected", "sources"])) {
                let sec = str_at(src, &["secret", "name"]);
                if secrets_included && !sec.is_empty() && !secrets.contains(sec) {
                    problems.push(format!("Deployment {name}: volume {vname} uses Secret {sec}, which is not in the set"));
                }
            }
        }
        let mut ports = Vec::new();
        for c in list(pod.get("containers")) {
            let cname = str_at(c, &["name"]);
            let cports: Vec<(u64, String, String)> = list(c.get("ports"))
                .iter()
                .map(|p| {
                    (
                        p.get("containerPort").and_then(Value::as_u64).unwrap_or(0),
                        str_at(p, &["name"]).to_string(),
                        match str_at(p, &["protocol"]) {
                            "" => "TCP".to_string(),
                            x => x.to_string(),
                        },
                    )
                })
                .collect();
            for probe in ["readinessProbe", "livenessProbe", "startupProbe"] {
                for handler in ["httpGet", "tcpSocket"] {
                    let Some(port) = s(c, &[probe, handler, "port"]) else {
                        continue;
                    };
                    let ok = match port {
                        Value::Number(n) => cports
                            .iter()
                            .any(|(p, _, proto)| Some(*p) == n.as_u64() && proto == "TCP"),
                        Value::String(sname) => cports.iter().any(|(_, n, _)| n == sname),
                        _ => false,
                    };
                    if !ok {
                        problems.push(format!("Deployment {name} container {cname}: the {probe} port {port:?} is not a container port"));
                    }
                }
            }
            for m in list(c.get("volumeMounts")) {
                let vname = str_at(m, &["name"]);
                if !volumes.contains_key(vname) {
                    problems.push(format!("Deployment {name} container {cname}: mounts volume {vname}, which the pod does not have"));
                }
            }
            for e in list(c.get("env")) {
                if let Some(r) = s(e, &["valueFrom", "configMapKeyRef"]) {
                    let (cm, key) = (str_at(r, &["name"]), str_at(r, &["key"]));
                    if !config_maps.get(cm).is_some_and(|k| k.contains(key)) {
                        problems.push(format!("Deployment {name} container {cname}: env {} reads {cm}/{key}, which is not in the set", str_at(e, &["name"])));
                    }
                }
                if let Some(r) = s(e, &["valueFrom", "secretKeyRef"]) {
                    let sec = str_at(r, &["name"]);
                    if secrets_included && !secrets.contains(sec) {
                        problems.push(format!("Deployment {name} container {cname}: env {} reads Secret {sec}, which is not in the set", str_at(e, &["name"])));
                    }
                }
            }
            ports.extend(cports);
        }
        pods.push(Pod {
            name,
            labels: tl,
            ports,
        });
    }
    for d in docs.iter().filter(|d| kind(d) != "CiliumNetworkPolicy") {
        let mut path = Vec::new();
        values(
            &format!("{} {}", kind(d), str_at(d, &["metadata", "name"])),
            d,
            &mut path,
            &mut problems,
        );
    }
    let deployments = named("Deployment");
    for d in docs {
        let name = str_at(d, &["metadata", "name"]);
        match kind(d).as_str() {
            "HorizontalPodAutoscaler" => {
                let t = s(d, &["spec", "scaleTargetRef"])
                    .cloned()
                    .unwrap_or(Value::Null);
                let (k, n, api) = (
                    str_at(&t, &["kind"]),
                    str_at(&t, &["name"]),
                    str_at(&t, &["apiVersion"]),
                );
                if k != "Deployment" || api != "apps/v1" || !deployments.contains(n) {
                    problems.push(format!("HorizontalPodAutoscaler {name}: targets {api} {k} {n}, not a Deployment of the set"));
                }
                let min = s(d, &["spec", "minReplicas"])
                    .and_then(Value::as_u64)
                    .unwrap_or(1);
                let max = s(d, &["spec", "maxReplicas"])
                    .and_then(Value::as_u64)
                    .unwrap_or(0);
                if min > max {
                    problems.push(format!("HorizontalPodAutoscaler {name}: minReplicas {min} is above maxReplicas {max}"));
                }
                if let Some(dep) = docs
                    .iter()
                    .find(|x| kind(x) == "Deployment" && str_at(x, &["metadata", "name"]) == n)
                {
                    if s(dep, &["spec", "replicas"]).is_some() {
                        problems.push(format!("Deployment {n}: has replicas although HorizontalPodAutoscaler {name} governs it"));
                    }
                }
            }
            "Service" => {
                let sel = labels(s(d, &["spec", "selector"]));
                let matched: Vec<&Pod> = pods.iter().filter(|p| selects(&sel, &p.labels)).collect();
                if matched.is_empty() {
                    problems.push(format!(
                        "Service {name}: the selector {sel:?} selects no Deployment of the set"
                    ));
                }
                for p in list(s(d, &["spec", "ports"])) {
                    let proto = match str_at(p, &["protocol"]) {
                        "" => "TCP",
                        x => x,
                    };
                    let target = p.get("targetPort").or_else(|| p.get("port"));
                    for pod in &matched {
                        let ok = match target {
                            Some(Value::Number(n)) => pod
                                .ports
                                .iter()
                                .any(|(c, _, pr)| Some(*c) == n.as_u64() && pr == proto),
                            Some(Value::String(sname)) => {
                                pod.ports.iter().any(|(_, n, _)| n == sname)
                            }
                            _ => false,
                        };
                        if !ok {
                            problems.push(format!("Service {name}: target port {target:?} is not a container port of Deployment {}", pod.name));
                        }
                    }
                }
            }
            "NetworkPolicy" | "CiliumNetworkPolicy" => {
                let key = if kind(d) == "NetworkPolicy" {
                    "podSelector"
                } else {
                    "endpointSelector"
                };
                let sel = labels(s(d, &["spec", key, "matchLabels"]));
                if !pods.iter().any(|p| selects(&sel, &p.labels)) {
                    problems.push(format!(
                        "{} {name}: the {key} {sel:?} selects no Deployment of the set",
                        kind(d)
                    ));
                }
            }
            _ => {}
        }
    }
    problems
}

/// Values the OpenAPI schema leaves as free strings but Kubernetes' API checks: enums,
/// quantities, names.
fn values(object: &str, v: &Value, path: &mut Vec<String>, problems: &mut Vec<String>) {
    let key = path.last().map(String::as_str).unwrap_or_default();
    let parent = path
        .iter()
        .rev()
        .nth(1)
        .map(String::as_str)
        .unwrap_or_default();
    let at = || path.join(".");
    let one_of = |allowed: &[&str], problems: &mut Vec<String>| {
        let s = v.as_str().unwrap_or_default();
        if !allowed.contains(&s) {
            problems.push(format!(
                "{object}: {} is {s:?}, not one of {allowed:?}",
                at()
            ));
        }
    };
    match v {
        Value::Mapping(m) => {
            for (k, x) in m {
                path.push(k.as_str().unwrap_or("?").to_string());
                values(object, x, path, problems);
                path.pop();
            }
            return;
        }
        Value::Sequence(list) => {
            for (i, x) in list.iter().enumerate() {
                path.push(i.to_string());
                values(object, x, path, problems);
                path.pop();
            }
            return;
        }
        _ => {}
    }
    // list items have their index as key: look at the list's name
    let list = if key.parse::<usize>().is_ok() {
        parent
    } else {
        ""
    };
    match (key, list) {
        ("protocol", _) => one_of(&["TCP", "UDP", "SCTP"], problems),
        (_, "policyTypes") => one_of(&["Ingress", "Egress"], problems),
        (_, "accessModes") => one_of(
            &[
                "ReadWriteOnce",
                "ReadOnlyMany",
                "ReadWriteMany",
                "ReadWriteOncePod",
            ],
            problems,
        ),
        ("medium", _) => one_of(&["", "Memory"], problems),
        ("scheme", _) => one_of(&["HTTP", "HTTPS"], problems),
        ("type", "") if parent == "seccompProfile" => {
            one_of(&["RuntimeDefault", "Unconfined", "Localhost"], problems)
        }
        ("type", "") if parent == "spec" && object.starts_with("Service ") => one_of(
            &["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"],
            problems,
        ),
        ("type", "") if parent == "target" => {
            one_of(&["Utilization", "AverageValue", "Value"], problems)
        }
        ("cpu" | "memory" | "storage", _) if matches!(parent, "limits" | "requests") => {
            quantity(object, &at(), v, problems)
        }
        ("sizeLimit", _) => quantity(object, &at(), v, problems),
        ("averageValue" | "value", _) if parent == "target" => quantity(object, &at(), v, problems),
        ("name", _) if parent == "metadata" && path.len() == 2 => {
            let n = v.as_str().unwrap_or_default();
            let ok = if object.starts_with("Service ") {
                crate::names::is_dns1035_label(n)
            } else {
                crate::names::is_dns1123_subdomain(n)
            };
            if !ok {
                problems.push(format!("{object}: {n:?} is not a valid name"));
            }
        }
        ("name", _) if path.iter().rev().nth(2).map(String::as_str) == Some("ports") => {
            let n = v.as_str().unwrap_or_default();
            if !crate::names::is_port_name(n) {
                problems.push(format!(
                    "{object}: port name {n:?} at {} is not an IANA service name",
                    at()
                ));
            }
        }
        _ => {}
    }
}

fn quantity(object: &str, at: &str, v: &Value, problems: &mut Vec<String>) {
    let text = match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    };
    if crate::quantity::parse_nanos(&text).is_none() {
        problems.push(format!("{object}: {at} is {text:?}, not a quantity"));
    }
}

/// The documents of a multi-document YAML text.
pub fn documents(text: &str) -> Result<Vec<Value>, serde_yaml::Error> {
    use serde::Deserialize;
    let mut out = Vec::new();
    for de in serde_yaml::Deserializer::from_str(text) {
        let v = Value::deserialize(de)?;
        if !v.is_null() {
            out.push(v);
        }
    }
    Ok(out)
}
