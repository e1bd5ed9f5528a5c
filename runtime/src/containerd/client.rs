//! Connection to containerd: address resolution, namespace metadata and retries.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use containerd_client::services::v1::{
    containers_client::ContainersClient, content_client::ContentClient, diff_client::DiffClient,
    images_client::ImagesClient, leases_client::LeasesClient,
    snapshots::snapshots_client::SnapshotsClient, tasks_client::TasksClient,
    version_client::VersionClient,
};
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

use super::error::{CtrdError, Result};

/// containerd's default socket.
pub const DEFAULT_ADDRESS: &str = "/run/containerd/containerd.sock";
/// aac's default namespace.
pub const DEFAULT_NAMESPACE: &str = "aac";
/// The snapshotter aac uses.
pub const SNAPSHOTTER: &str = "overlayfs";

const RETRIES: u32 = 5;
const FIRST_BACKOFF: Duration = Duration::from_millis(50);

/// The socket to use: the `--address` flag value if given, else `CONTAINERD_ADDRESS`, else
/// for a non-root user the rootless containerd's socket when it exists
/// (`$XDG_RUNTIME_DIR/containerd/containerd.sock`), else [`DEFAULT_ADDRESS`].
pub fn default_address(flag: Option<&Path>) -> PathBuf {
    if let Some(p) = flag {
        return p.to_path_buf();
    }
    match std::env::var_os("CONTAINERD_ADDRESS") {
        Some(v) if !v.is_empty() => {
            let s = v.to_string_lossy();
            PathBuf::from(s.strip_prefix("unix://").unwrap_or(&s))
        }
        _ => crate::rootlesskit::user_containerd_socket()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_ADDRESS)),
    }
}

/// The namespace to use: the flag value if given, else `AAC_NAMESPACE`, else `aac`.
pub fn default_namespace(flag: Option<&str>) -> String {
    if let Some(n) = flag {
        return n.to_string();
    }
    match std::env::var("AAC_NAMESPACE") {
        Ok(v) if !v.is_empty() => v,
        _ => DEFAULT_NAMESPACE.to_string(),
    }
}

/// containerd's namespace rule: `[A-Za-z0-9]+([._-][A-Za-z0-9]+)*`, at most 76 bytes.
pub(crate) fn valid_namespace(ns: &str) -> bool {
    if ns.is_empty() || ns.len() > 76 {
        return false;
    }
    let mut prev_sep = true;
    for c in ns.chars() {
        if c.is_ascii_alphanumeric() {
            prev_sep = false;
        } else if matches!(c, '.' | '_' | '-') {
            if prev_sep {
                return false;
            }
            prev_sep = true;
        } else {
            return false;
        }
    }
    !prev_sep
}

/// A connection to one containerd, bound to one namespace. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    channel: Channel,
    namespace: String,
    ns_value: MetadataValue<tonic::metadata::Ascii>,
    address: PathBuf,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("address", &self.address)
            .field("namespace", &self.namespace)
            .finish()
    }
}

impl Client {
    /// Connects to the containerd socket at `address` and checks that it answers.
    pub async fn connect(address: &Path, namespace: &str) -> Result<Client> {
        if !valid_namespace(namespace) {
            return Err(CtrdError::InvalidNamespace(namespace.to_string()));
        }
        let ns_value = MetadataValue::try_from(namespace)
            .map_err(|_| CtrdError::InvalidNamespace(namespace.to_string()))?;
        let unreachable = |reason: String| CtrdError::Unreachable {
            address: address.to_path_buf(),
            reason,
        };
        match std::fs::metadata(address) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(unreachable("the socket does not exist".into()))
            }
            Err(e) => return Err(unreachable(e.to_string())),
            Ok(_) => {}
        }
        let channel = containerd_client::connect(address)
            .await
            .map_err(|e| unreachable(format!("{e}: {}", source_chain(&e))))?;
        let mut version = VersionClient::new(channel.clone());
        let v = tokio::time::timeout(Duration::from_secs(10), version.version(()))
            .await
            .map_err(|_| unreachable("no answer within 10 s".into()))?
            .map_err(|s| unreachable(s.message().to_string()))?
            .into_inner();
        tracing::debug!(address = %address.display(), version = %v.version, "connected to containerd");
        Ok(Client {
            channel,
            namespace: namespace.to_string(),
            ns_value,
            address: address.to_path_buf(),
        })
    }

    /// The namespace every call is made in.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The socket address.
    pub fn address(&self) -> &Path {
        &self.address
    }

    /// containerd's version string.
    pub async fn version(&self) -> Result<String> {
        let v = VersionClient::new(self.channel.clone());
        let r = self
            .retry("Version", || {
                let mut v = v.clone();
                async move { v.version(()).await }
            })
            .await?;
        Ok(r.version)
    }

    /// A request carrying the namespace metadata.
    pub(crate) fn req<T>(&self, msg: T) -> Request<T> {
        let mut r = Request::new(msg);
        r.metadata_mut()
            .insert("containerd-namespace", self.ns_value.clone());
        r
    }

    /// A request carrying the namespace and lease metadata.
    pub(crate) fn req_leased<T>(&self, msg: T, lease: &str) -> Result<Request<T>> {
        let mut r = self.req(msg);
        let v = MetadataValue::try_from(lease).map_err(|_| CtrdError::Grpc {
            op: "lease",
            code: Code::InvalidArgument,
            message: format!("invalid lease id {lease:?}"),
        })?;
        r.metadata_mut().insert("containerd-lease", v);
        Ok(r)
    }

    /// Runs an idempotent call, retrying `Unavailable` with bounded exponential backoff.
    pub(crate) async fn retry<T, F, Fut>(&self, op: &'static str, mut call: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, Status>>,
    {
        let mut backoff = FIRST_BACKOFF;
        let mut attempt = 1;
        loop {
            match call().await {
                Ok(r) => return Ok(r.into_inner()),
                Err(s) if s.code() == Code::Unavailable && attempt < RETRIES => {
                    tracing::debug!(op, attempt, error = %s.message(), "containerd unavailable, retrying");
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                    attempt += 1;
                }
                Err(s) if s.code() == Code::Unavailable => {
                    return Err(CtrdError::Unreachable {
                        address: self.address.clone(),
                        reason: format!("{op}: {}", s.message()),
                    })
                }
                Err(s) => return Err(CtrdError::grpc(op, s)),
            }
        }
    }

    /// Creates a lease that protects what is made under it from GC; it expires by itself
    /// after an hour so a crash cannot pin content forever.
    pub(crate) async fn create_lease(&self, purpose: &str) -> Result<String> {
        self.create_lease_labeled(purpose, None).await
    }

    /// [`Client::create_lease`] with label `aac.dev/for=<what>`.
    pub(crate) async fn create_lease_labeled(
        &self,
        purpose: &str,
        what: Option<&str>,
    ) -> Result<String> {
        use containerd_client::services::v1::CreateRequest;
        let id = format!("aac-{purpose}-{}", unique_suffix());
        let mut labels = std::collections::HashMap::new();
        let expire = chrono_like_rfc3339(std::time::SystemTime::now() + Duration::from_secs(3600));
        labels.insert("containerd.io/gc.expire".to_string(), expire);
        if let Some(w) = what {
            labels.insert("aac.dev/for".to_string(), w.to_string());
        }
        let req = self.req(CreateRequest {
            id: id.clone(),
            labels,
        });
        self.leases()
            .create(req)
            .await
            .map_err(|s| CtrdError::grpc("Leases.Create", s))?;
        Ok(id)
    }

    /// Makes `lease` hold a resource that may already exist (`content` by digest, or
    /// `snapshots/<snapshotter>` by key). Work that reuses content or a snapshot it did not
    /// write takes it into its lease first, then checks that it exists: otherwise a garbage
    /// collection between the check and the image record (an image removed a moment ago)
    /// can take it away and leave an image whose blobs are gone.
    pub(crate) async fn lease_resource(&self, lease: &str, kind: &str, id: &str) -> Result<()> {
        use containerd_client::services::v1::{AddResourceRequest, Resource};
        let leases = self.leases();
        self.retry("Leases.AddResource", || {
            let mut l = leases.clone();
            let req = self.req(AddResourceRequest {
                id: lease.to_string(),
                resource: Some(Resource {
                    id: id.to_string(),
                    r#type: kind.to_string(),
                }),
            });
            async move { l.add_resource(req).await }
        })
        .await
        .map(|_| ())
    }

    /// Deletes a lease; NotFound is success.
    pub(crate) async fn delete_lease(&self, id: &str) -> Result<()> {
        use containerd_client::services::v1::DeleteRequest;
        let leases = self.leases();
        let r = self
            .retry("Leases.Delete", || {
                let mut l = leases.clone();
                let req = self.req(DeleteRequest {
                    id: id.to_string(),
                    sync: false,
                });
                async move { l.delete(req).await }
            })
            .await;
        match r {
            Err(e) if e.is_not_found() => Ok(()),
            r => r.map(|_| ()),
        }
    }

    /// All leases in the namespace as (id, labels) (to check that nothing is left behind).
    pub async fn list_leases(
        &self,
    ) -> Result<Vec<(String, std::collections::HashMap<String, String>)>> {
        use containerd_client::services::v1::ListRequest;
        let leases = self.leases();
        let r = self
            .retry("Leases.List", || {
                let mut l = leases.clone();
                let req = self.req(ListRequest { filters: vec![] });
                async move { l.list(req).await }
            })
            .await?;
        Ok(r.leases.into_iter().map(|l| (l.id, l.labels)).collect())
    }

    pub(crate) fn containers(&self) -> ContainersClient<Channel> {
        ContainersClient::new(self.channel.clone())
    }
    pub(crate) fn content(&self) -> ContentClient<Channel> {
        ContentClient::new(self.channel.clone())
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20)
    }
    pub(crate) fn diff(&self) -> DiffClient<Channel> {
        DiffClient::new(self.channel.clone())
    }
    pub(crate) fn images(&self) -> ImagesClient<Channel> {
        ImagesClient::new(self.channel.clone())
    }
    pub(crate) fn leases(&self) -> LeasesClient<Channel> {
        LeasesClient::new(self.channel.clone())
    }
    pub(crate) fn snapshots(&self) -> SnapshotsClient<Channel> {
        SnapshotsClient::new(self.channel.clone())
    }
    pub(crate) fn tasks(&self) -> TasksClient<Channel> {
        TasksClient::new(self.channel.clone())
    }
    pub(crate) fn events(
        &self,
    ) -> containerd_client::services::v1::events_client::EventsClient<Channel> {
        containerd_client::services::v1::events_client::EventsClient::new(self.channel.clone())
    }
}

/// A suffix unique within this host for the next few hours: pid, time and a counter.
pub(crate) fn unique_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{}-{:x}-{n}", std::process::id(), t)
}

/// RFC 3339 UTC timestamp (seconds precision) without a date crate.
fn chrono_like_rfc3339(t: std::time::SystemTime) -> String {
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

fn source_chain(e: &dyn std::error::Error) -> String {
    let mut out = Vec::new();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push(s.to_string());
        cur = s.source();
    }
    out.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces() {
        assert!(valid_namespace("aac"));
        assert!(valid_namespace("aac-test.1"));
        assert!(!valid_namespace(""));
        assert!(!valid_namespace("-a"));
        assert!(!valid_namespace("a--b"));
        assert!(!valid_namespace("a b"));
        assert!(!valid_namespace("a/"));
    }

    #[tokio::test]
    async fn missing_socket_says_how_to_start() {
        let err = Client::connect(Path::new("/nonexistent/ctrd.sock"), "aac")
            .await
            .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("not reachable at /nonexistent/ctrd.sock"),
            "{msg}"
        );
        assert!(msg.contains("systemctl start containerd"), "{msg}");
    }

    #[test]
    fn rfc3339() {
        let t = std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(chrono_like_rfc3339(t), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn address_flag_wins() {
        assert_eq!(
            default_address(Some(Path::new("/x.sock"))),
            PathBuf::from("/x.sock")
        );
    }
}
