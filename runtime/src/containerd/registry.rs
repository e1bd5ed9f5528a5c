//! Pull and push of images from and to an OCI distribution registry (Docker Registry HTTP
//! API v2).
//!
//! HTTP is blocking (`ureq`) and runs on tokio's blocking pool; a layer flows from the HTTP
//! body through a bounded channel of 1 MiB chunks into Content.Write (or from Content.Read
//! into an upload), so memory stays bounded whatever the layer size. Blobs go into the
//! content store with the same GC labels image import uses, and the image is unpacked with
//! the import's unpack code. Everything is written under a lease that is deleted at the end,
//! so a failed pull leaves neither an image record nor a lease behind.

use std::collections::HashMap;
use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use containerd_client::services::v1::ReadContentRequest;
use serde::Deserialize;
use sha2::Digest;
use tokio_stream::StreamExt;
use ureq::http::{self, Method};

use super::client::Client;
use super::content::{sha256_digest, BlobSource};
use super::descriptor::{Descriptor, Progress};
use super::error::{CtrdError, RegistryError, Result};
use super::images::{
    config_gc_labels, is_index, manifest_gc_labels, normalize_reference, parse_json, pick_platform,
    ConfigDoc, ImageSummary, Index, Manifest, MEDIA_DOCKER_LIST, MEDIA_OCI_INDEX,
    MEDIA_OCI_MANIFEST,
};

/// Docker's image manifest (schema 2).
pub const MEDIA_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const MEDIA_DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
const MEDIA_DOCKER_SCHEMA1_SIGNED: &str =
    "application/vnd.docker.distribution.manifest.v1+prettyjws";

/// The registry name of Docker Hub in references, and the host its API is served from.
const DOCKER_HUB: &str = "docker.io";
const DOCKER_HUB_API: &str = "registry-1.docker.io";
/// Environment variable listing registries (`host` or `host:port`, comma separated) that
/// are reached over plain HTTP.
pub const INSECURE_REGISTRIES_ENV: &str = "AAC_INSECURE_REGISTRIES";

/// One chunk of a streamed blob.
const CHUNK: usize = 1 << 20;
/// Largest manifest, index or config we read into memory.
const MAX_DOCUMENT: u64 = 16 << 20;
/// Largest error body we read.
const MAX_ERROR_BODY: u64 = 64 << 10;

/// Registry credentials (basic auth, also used to obtain bearer tokens).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl Credentials {
    /// Credentials from `username` and `password`.
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Self {
        Credentials {
            username: username.into(),
            password: password.into(),
        }
    }

    /// Credentials from `AAC_REGISTRY_USER` and `AAC_REGISTRY_PASSWORD`, if the user is set.
    pub fn from_env() -> Option<Self> {
        let user = std::env::var("AAC_REGISTRY_USER").ok()?;
        if user.is_empty() {
            return None;
        }
        let password = std::env::var("AAC_REGISTRY_PASSWORD").unwrap_or_default();
        Some(Credentials::new(user, password))
    }

    fn basic_header(&self) -> String {
        let raw = format!("{}:{}", self.username, self.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

/// A parsed image reference: `[registry/]repository[:tag][@digest]`, docker style.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// Registry host (with port), `docker.io` when none is named.
    pub registry: String,
    /// Repository path, `library/x` for official Docker Hub images.
    pub repository: String,
    /// Tag; `latest` when neither a tag nor a digest is given.
    pub tag: Option<String>,
    /// Digest `sha256:<hex>`.
    pub digest: Option<String>,
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

fn valid_path_component(c: &str) -> bool {
    // [a-z0-9]+ separated by '.', '_', '__' or '-'+.
    !c.is_empty()
        && c.chars()
            .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || "._-".contains(ch))
        && c.starts_with(|ch: char| ch.is_ascii_alphanumeric())
        && c.ends_with(|ch: char| ch.is_ascii_alphanumeric())
        && !c.contains("..")
        && !c.contains("___")
}

fn valid_tag(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 128
        && t.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

fn valid_sha256(d: &str) -> bool {
    d.strip_prefix("sha256:").is_some_and(|h| {
        h.len() == 64
            && h.chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
    })
}

fn valid_host(h: &str) -> bool {
    !h.is_empty()
        && !h.starts_with(['-', '.', ':'])
        && h.chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c))
}

impl Reference {
    /// Parses a reference the way docker does: `busybox` is
    /// `docker.io/library/busybox:latest`; the first path component names a registry when it
    /// contains `.` or `:` or is `localhost`.
    pub fn parse(reference: &str) -> Result<Reference> {
        let bad = || CtrdError::InvalidReference(reference.to_string());
        let r = reference.trim();
        if r.is_empty() || r.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad());
        }
        let (name, digest) = match r.split_once('@') {
            Some((n, d)) => {
                if !valid_sha256(d) {
                    return Err(bad());
                }
                (n, Some(d.to_string()))
            }
            None => (r, None),
        };
        let last_slash = name.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (name, tag) = match name[last_slash..].rfind(':') {
            Some(i) => {
                let tag = &name[last_slash + i + 1..];
                if !valid_tag(tag) {
                    return Err(bad());
                }
                (&name[..last_slash + i], Some(tag.to_string()))
            }
            None => (name, None),
        };
        let (registry, path) = match name.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), rest.to_string())
            }
            _ => (DOCKER_HUB.to_string(), name.to_string()),
        };
        if !valid_host(&registry) {
            return Err(bad());
        }
        let registry = if registry == "index.docker.io" || registry == DOCKER_HUB_API {
            DOCKER_HUB.to_string()
        } else {
            registry
        };
        let repository = if registry == DOCKER_HUB && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        if !repository.split('/').all(valid_path_component) || repository.len() > 255 {
            return Err(bad());
        }
        let tag = if tag.is_none() && digest.is_none() {
            Some("latest".to_string())
        } else {
            tag
        };
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// What the manifest is fetched by: the digest if given, else the tag.
    pub fn object(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }

    /// The host the registry API is served from.
    pub fn api_host(&self) -> &str {
        if self.registry == DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            &self.registry
        }
    }

    /// Is the registry reached over plain HTTP? True for loopback registries and those
    /// listed in `AAC_INSECURE_REGISTRIES`.
    pub fn is_insecure(&self) -> bool {
        let list = std::env::var(INSECURE_REGISTRIES_ENV).unwrap_or_default();
        insecure(&self.registry, &list)
    }
}

fn host_without_port(registry: &str) -> &str {
    if registry.starts_with('[') {
        return match registry.find(']') {
            Some(i) => &registry[..=i],
            None => registry,
        };
    }
    registry.split(':').next().unwrap_or(registry)
}

fn insecure(registry: &str, list: &str) -> bool {
    let host = host_without_port(registry);
    if matches!(host, "localhost" | "127.0.0.1" | "[::1]") {
        return true;
    }
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .any(|e| e == registry || e == host)
}

/// A `WWW-Authenticate` challenge: scheme and parameters.
fn parse_challenge(header: &str) -> Option<(String, HashMap<String, String>)> {
    let header = header.trim();
    let (scheme, rest) = match header.split_once(char::is_whitespace) {
        Some((s, r)) => (s, r),
        None => (header, ""),
    };
    if scheme.is_empty() {
        return None;
    }
    let mut params = HashMap::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' {
                break;
            }
            key.push(c);
            chars.next();
        }
        if key.is_empty() || chars.next() != Some('=') {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => {
                        if let Some(n) = chars.next() {
                            value.push(n);
                        }
                    }
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                value.push(c);
                chars.next();
            }
        }
        params.insert(key.trim().to_ascii_lowercase(), value.trim().to_string());
    }
    Some((scheme.to_ascii_lowercase(), params))
}

/// The messages of a registry error body (`{"errors":[{"code":..,"message":..}]}`), or the
/// body's text.
fn error_text(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Entry {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    #[derive(Deserialize)]
    struct Doc {
        #[serde(default)]
        errors: Vec<Entry>,
    }
    if let Ok(doc) = serde_json::from_slice::<Doc>(body) {
        if !doc.errors.is_empty() {
            return doc
                .errors
                .iter()
                .map(|e| match (e.code.is_empty(), e.message.is_empty()) {
                    (false, false) => format!("{} ({})", e.message, e.code),
                    (true, false) => e.message.clone(),
                    _ => e.code.clone(),
                })
                .collect::<Vec<_>>()
                .join("; ");
        }
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.len() > 300 {
        let mut end = 300;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}...", &text[..end])
    } else {
        text.to_string()
    }
}

fn encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// The media type of a manifest document: its `mediaType` field, else a known Content-Type,
/// else guessed from its shape.
fn manifest_media_type(content_type: &str, body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Probe {
        #[serde(rename = "mediaType", default)]
        media_type: Option<String>,
        #[serde(default)]
        manifests: Option<serde_json::Value>,
        #[serde(rename = "schemaVersion", default)]
        schema_version: Option<u32>,
    }
    let probe = serde_json::from_slice::<Probe>(body).ok();
    if let Some(m) = probe
        .as_ref()
        .and_then(|p| p.media_type.clone())
        .filter(|m| !m.is_empty())
    {
        return m;
    }
    let ct = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if [
        MEDIA_OCI_INDEX,
        MEDIA_OCI_MANIFEST,
        MEDIA_DOCKER_LIST,
        MEDIA_DOCKER_MANIFEST,
        MEDIA_DOCKER_SCHEMA1,
        MEDIA_DOCKER_SCHEMA1_SIGNED,
    ]
    .contains(&ct.as_str())
    {
        return ct;
    }
    match probe {
        Some(p) if p.schema_version == Some(1) => MEDIA_DOCKER_SCHEMA1.to_string(),
        Some(p) if p.manifests.is_some() => MEDIA_OCI_INDEX.to_string(),
        _ => MEDIA_OCI_MANIFEST.to_string(),
    }
}

/// A connection to one repository of one registry, with its authorization state. Blocking:
/// use it on the blocking pool.
struct Session {
    agent: ureq::Agent,
    /// `http(s)://host[:port]`.
    base: String,
    /// The registry name for messages.
    registry: String,
    repository: String,
    credentials: Option<Credentials>,
    /// `pull` or `pull,push`: the scope asked for when the registry names none.
    actions: &'static str,
    /// The Authorization header value that worked last.
    authorization: Mutex<Option<String>>,
}

type HttpResponse = http::Response<ureq::Body>;

impl Session {
    fn new(r: &Reference, credentials: Option<Credentials>, actions: &'static str) -> Session {
        let scheme = if r.is_insecure() { "http" } else { "https" };
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_per_read(Some(Duration::from_secs(120)))
            .timeout_per_write(Some(Duration::from_secs(120)))
            .user_agent(concat!("aac/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Session {
            agent,
            base: format!("{scheme}://{}", r.api_host()),
            registry: r.registry.clone(),
            repository: r.repository.clone(),
            credentials,
            actions,
            authorization: Mutex::new(None),
        }
    }

    fn url(&self, rest: &str) -> String {
        format!("{}/v2/{}/{rest}", self.base, self.repository)
    }

    fn protocol(&self, message: impl Into<String>) -> CtrdError {
        RegistryError::Protocol {
            registry: self.registry.clone(),
            message: message.into(),
        }
        .into()
    }

    fn net_error(&self, request: &str, e: ureq::Error) -> CtrdError {
        match e {
            ureq::Error::Io(_)
            | ureq::Error::Timeout(_)
            | ureq::Error::HostNotFound
            | ureq::Error::ConnectionFailed
            | ureq::Error::Tls(_)
            | ureq::Error::Rustls(_) => RegistryError::Unreachable {
                address: self.base.clone(),
                reason: format!("{request}: {e}"),
            }
            .into(),
            e => self.protocol(format!("{request}: {e}")),
        }
    }

    fn current_authorization(&self) -> Option<String> {
        self.authorization
            .lock()
            .map(|g| g.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    fn set_authorization(&self, value: String) {
        match self.authorization.lock() {
            Ok(mut g) => *g = Some(value),
            Err(p) => *p.into_inner() = Some(value),
        }
    }

    fn read_error(&self, resp: HttpResponse) -> String {
        let body = resp
            .into_body()
            .into_with_config()
            .limit(MAX_ERROR_BODY)
            .read_to_vec()
            .unwrap_or_default();
        error_text(&body)
    }

    fn http_error(&self, request: &str, resp: HttpResponse) -> CtrdError {
        let status = resp.status().as_u16();
        let message = self.read_error(resp);
        RegistryError::Http {
            registry: self.registry.clone(),
            request: request.to_string(),
            status,
            message,
        }
        .into()
    }

    fn send<B: ureq::AsSendBody>(
        &self,
        method: &Method,
        url: &str,
        headers: &[(&str, String)],
        body: B,
        authorization: Option<&str>,
    ) -> Result<HttpResponse> {
        let mut b = http::Request::builder().method(method.clone()).uri(url);
        for (k, v) in headers {
            b = b.header(*k, v.as_str());
        }
        if let Some(a) = authorization {
            b = b.header("Authorization", a);
        }
        let req = b
            .body(body)
            .map_err(|e| self.protocol(format!("{method} {url}: {e}")))?;
        self.agent
            .run(req)
            .map_err(|e| self.net_error(&format!("{method} {url}"), e))
    }

    /// Sends a request, answering one authentication challenge if the registry makes one.
    fn call(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, String)],
        body: Option<&[u8]>,
    ) -> Result<HttpResponse> {
        let mut answered = false;
        loop {
            let auth = self.current_authorization();
            let resp = match body {
                Some(b) => self.send(&method, url, headers, b, auth.as_deref())?,
                None => self.send(&method, url, headers, (), auth.as_deref())?,
            };
            if resp.status().as_u16() != 401 {
                return Ok(resp);
            }
            let challenge = resp
                .headers()
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let message = self.read_error(resp);
            if answered {
                return Err(self.refused(message));
            }
            self.authenticate(challenge.as_deref(), message)?;
            answered = true;
        }
    }

    /// The error for a request refused although we answered the challenge.
    fn refused(&self, message: String) -> CtrdError {
        if self.credentials.is_none() {
            RegistryError::AuthRequired {
                registry: self.registry.clone(),
                reason: format!(
                    "anonymous access to {} was refused ({message}); the repository may also not exist",
                    self.repository
                ),
            }
            .into()
        } else {
            RegistryError::Unauthorized {
                registry: self.registry.clone(),
                message: if message.is_empty() {
                    "the registry refused the credentials".into()
                } else {
                    message
                },
            }
            .into()
        }
    }

    /// Answers a `WWW-Authenticate` challenge: basic credentials, or a bearer token from the
    /// realm.
    fn authenticate(&self, challenge: Option<&str>, message: String) -> Result<()> {
        let parsed = challenge.and_then(parse_challenge);
        let need_credentials = || -> CtrdError {
            RegistryError::AuthRequired {
                registry: self.registry.clone(),
                reason: if message.is_empty() {
                    "the registry asks for credentials".into()
                } else {
                    message.clone()
                },
            }
            .into()
        };
        match parsed {
            Some((scheme, params)) if scheme == "bearer" => {
                let realm = params
                    .get("realm")
                    .filter(|r| !r.is_empty())
                    .ok_or_else(|| self.protocol("bearer challenge without a realm"))?;
                // A login check (no repository) asks for a token without a scope, as docker's.
                let scope = params.get("scope").cloned().or_else(|| {
                    (!self.repository.is_empty())
                        .then(|| format!("repository:{}:{}", self.repository, self.actions))
                });
                let mut url = realm.clone();
                url.push(if url.contains('?') { '&' } else { '?' });
                let mut query: Vec<String> = scope
                    .iter()
                    .map(|s| format!("scope={}", encode(s)))
                    .collect();
                if let Some(c) = &self.credentials {
                    query.push(format!("account={}", encode(&c.username)));
                }
                if let Some(service) = params.get("service") {
                    query.push(format!("service={}", encode(service)));
                }
                url.push_str(&query.join("&"));
                let basic = self.credentials.as_ref().map(Credentials::basic_header);
                let resp = self.send(&Method::GET, &url, &[], (), basic.as_deref())?;
                let status = resp.status().as_u16();
                if status == 401 || status == 403 {
                    let message = self.read_error(resp);
                    return Err(if self.credentials.is_some() {
                        RegistryError::Unauthorized {
                            registry: self.registry.clone(),
                            message,
                        }
                        .into()
                    } else {
                        need_credentials()
                    });
                }
                if status != 200 {
                    return Err(self.http_error(&format!("GET token from {realm}"), resp));
                }
                #[derive(Deserialize)]
                struct Token {
                    #[serde(default)]
                    token: String,
                    #[serde(default)]
                    access_token: String,
                }
                let body = resp
                    .into_body()
                    .into_with_config()
                    .limit(MAX_ERROR_BODY * 4)
                    .read_to_vec()
                    .map_err(|e| self.net_error(&format!("GET {realm}"), e))?;
                let t: Token = serde_json::from_slice(&body)
                    .map_err(|e| self.protocol(format!("token answer from {realm}: {e}")))?;
                let token = if t.token.is_empty() {
                    t.access_token
                } else {
                    t.token
                };
                if token.is_empty() {
                    return Err(self.protocol(format!("{realm} returned no token")));
                }
                self.set_authorization(format!("Bearer {token}"));
                Ok(())
            }
            // Basic, or no usable challenge: try basic credentials.
            _ => match &self.credentials {
                Some(c) => {
                    self.set_authorization(c.basic_header());
                    Ok(())
                }
                None => Err(need_credentials()),
            },
        }
    }

    fn read_document(&self, request: &str, resp: HttpResponse) -> Result<Vec<u8>> {
        resp.into_body()
            .into_with_config()
            .limit(MAX_DOCUMENT)
            .read_to_vec()
            .map_err(|e| self.net_error(request, e))
    }

    /// GETs a manifest or index by tag or digest: (bytes, media type).
    fn get_manifest(&self, object: &str, display: &str) -> Result<(Vec<u8>, String)> {
        let url = self.url(&format!("manifests/{object}"));
        let accept = [
            MEDIA_OCI_INDEX,
            MEDIA_OCI_MANIFEST,
            MEDIA_DOCKER_LIST,
            MEDIA_DOCKER_MANIFEST,
        ]
        .join(", ");
        let resp = self.call(Method::GET, &url, &[("Accept", accept)], None)?;
        let request = format!("GET {url}");
        match resp.status().as_u16() {
            200 => {}
            404 => {
                return Err(RegistryError::NotFound {
                    registry: self.registry.clone(),
                    reference: display.to_string(),
                }
                .into())
            }
            _ => return Err(self.http_error(&request, resp)),
        }
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let body = self.read_document(&request, resp)?;
        let media = manifest_media_type(&content_type, &body);
        Ok((body, media))
    }

    fn get_blob_response(&self, digest: &str) -> Result<(String, HttpResponse)> {
        let url = self.url(&format!("blobs/{digest}"));
        let resp = self.call(Method::GET, &url, &[], None)?;
        let request = format!("GET {url}");
        if resp.status().as_u16() != 200 {
            return Err(self.http_error(&request, resp));
        }
        Ok((request, resp))
    }

    /// GETs a small blob (config) and checks its size and digest.
    fn get_small_blob(&self, desc: &Descriptor) -> Result<Vec<u8>> {
        if desc.size < 0 || desc.size as u64 > MAX_DOCUMENT {
            return Err(self.protocol(format!(
                "blob {} is {} bytes, more than the {MAX_DOCUMENT} allowed for a document",
                desc.digest, desc.size
            )));
        }
        let (request, resp) = self.get_blob_response(&desc.digest)?;
        let body = self.read_document(&request, resp)?;
        check_blob(desc, body.len() as i64, &sha256_digest(&body))?;
        Ok(body)
    }

    /// GETs a blob and feeds it in chunks into `tx`; the last item is an error if the
    /// download failed or the blob does not match its descriptor.
    fn stream_blob(&self, desc: &Descriptor, tx: &tokio::sync::mpsc::Sender<Result<Vec<u8>>>) {
        if let Err(e) = self.stream_blob_inner(desc, tx) {
            let _ = tx.blocking_send(Err(e));
        }
    }

    fn stream_blob_inner(
        &self,
        desc: &Descriptor,
        tx: &tokio::sync::mpsc::Sender<Result<Vec<u8>>>,
    ) -> Result<()> {
        let (request, resp) = self.get_blob_response(&desc.digest)?;
        let mut body = resp.into_body().into_reader();
        let mut hasher = sha2::Sha256::new();
        let mut total: i64 = 0;
        loop {
            let mut buf = vec![0u8; CHUNK];
            let mut filled = 0;
            while filled < CHUNK {
                let n = body.read(&mut buf[filled..]).map_err(|e| {
                    CtrdError::from(RegistryError::Unreachable {
                        address: self.base.clone(),
                        reason: format!("{request}: reading the body: {e}"),
                    })
                })?;
                if n == 0 {
                    break;
                }
                filled += n;
            }
            if filled == 0 {
                break;
            }
            buf.truncate(filled);
            total += filled as i64;
            if total > desc.size {
                return Err(self.protocol(format!(
                    "blob {} is larger than the {} bytes its descriptor says",
                    desc.digest, desc.size
                )));
            }
            hasher.update(&buf);
            if tx.blocking_send(Ok(buf)).is_err() {
                return Ok(()); // the writer gave up; its error is reported
            }
        }
        let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
        check_blob(desc, total, &actual)
    }

    /// Does the repository hold blob `digest`?
    fn has_blob(&self, digest: &str) -> Result<bool> {
        let url = self.url(&format!("blobs/{digest}"));
        let resp = self.call(Method::HEAD, &url, &[], None)?;
        match resp.status().as_u16() {
            200 => Ok(true),
            404 => Ok(false),
            _ => Err(self.http_error(&format!("HEAD {url}"), resp)),
        }
    }

    /// Starts an upload; returns the URL to PUT the blob to (digest included).
    fn start_upload(&self, digest: &str) -> Result<String> {
        let url = self.url("blobs/uploads/");
        let resp = self.call(
            Method::POST,
            &url,
            &[("Content-Length", "0".to_string())],
            None,
        )?;
        let request = format!("POST {url}");
        if resp.status().as_u16() != 202 {
            return Err(self.http_error(&request, resp));
        }
        let location = resp
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| self.protocol(format!("{request}: no Location header")))?;
        let mut target = if location.starts_with("http://") || location.starts_with("https://") {
            location.to_string()
        } else if location.starts_with('/') {
            format!("{}{location}", self.base)
        } else {
            format!("{}/{location}", self.base)
        };
        target.push(if target.contains('?') { '&' } else { '?' });
        target.push_str(&format!("digest={}", encode(digest)));
        Ok(target)
    }

    /// PUTs a blob's bytes (monolithic upload) read from `body`.
    fn finish_upload(&self, url: &str, size: i64, body: impl Read + 'static) -> Result<()> {
        let auth = self.current_authorization();
        let resp = self.send(
            &Method::PUT,
            url,
            &[
                ("Content-Length", size.to_string()),
                ("Content-Type", "application/octet-stream".to_string()),
            ],
            ureq::SendBody::from_owned_reader(body),
            auth.as_deref(),
        )?;
        match resp.status().as_u16() {
            201 | 204 => Ok(()),
            401 => {
                let m = self.read_error(resp);
                Err(self.refused(m))
            }
            _ => Err(self.http_error(&format!("PUT {url}"), resp)),
        }
    }

    fn put_manifest(&self, object: &str, media_type: &str, bytes: &[u8]) -> Result<()> {
        let url = self.url(&format!("manifests/{object}"));
        let resp = self.call(
            Method::PUT,
            &url,
            &[("Content-Type", media_type.to_string())],
            Some(bytes),
        )?;
        match resp.status().as_u16() {
            200..=202 => Ok(()),
            _ => Err(self.http_error(&format!("PUT {url}"), resp)),
        }
    }
}

fn check_blob(desc: &Descriptor, size: i64, digest: &str) -> Result<()> {
    if digest != desc.digest {
        return Err(CtrdError::DigestMismatch {
            what: format!("downloaded blob ({size} bytes)"),
            expected: desc.digest.clone(),
            actual: digest.to_string(),
        });
    }
    if size != desc.size {
        return Err(CtrdError::InvalidImage(format!(
            "blob {} has {size} bytes, its descriptor says {}",
            desc.digest, desc.size
        )));
    }
    Ok(())
}

/// A reader over chunks arriving on a channel (Content.Read feeding an upload).
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<std::result::Result<Vec<u8>, String>>,
    buf: Vec<u8>,
    pos: usize,
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos >= self.buf.len() {
            match self.rx.blocking_recv() {
                Some(Ok(chunk)) => {
                    self.buf = chunk;
                    self.pos = 0;
                }
                Some(Err(e)) => return Err(std::io::Error::other(e)),
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Runs blocking registry I/O on the blocking pool.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| CtrdError::Io {
            context: "registry I/O task".into(),
            source: std::io::Error::other(e.to_string()),
        })?
}

fn is_schema1(media_type: &str) -> bool {
    media_type == MEDIA_DOCKER_SCHEMA1 || media_type == MEDIA_DOCKER_SCHEMA1_SIGNED
}

/// What a pull resolved: the platform manifest and, if the reference named an index, the
/// index.
struct Resolved {
    manifest: Manifest,
    manifest_desc: Descriptor,
    manifest_bytes: Vec<u8>,
    /// Index descriptor, bytes and the position of the chosen manifest in it.
    index: Option<(Descriptor, Vec<u8>, usize)>,
}

/// `aac login`: do these credentials open `registry` (`host[:port]`; `docker.io` for Docker
/// Hub)? The registry's `/v2/` is asked, answering its challenge (basic, or a bearer token
/// from its realm); a registry that wants no credentials accepts any.
pub async fn check_login(registry: &str, creds: &Credentials) -> Result<()> {
    let r = Reference {
        registry: registry.to_string(),
        repository: String::new(),
        tag: None,
        digest: None,
    };
    let session = Session::new(&r, Some(creds.clone()), "pull");
    blocking(move || {
        let url = format!("{}/v2/", session.base);
        let resp = session.call(Method::GET, &url, &[], None)?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(session.http_error("GET /v2/", resp))
        }
    })
    .await
}

/// The credentials to use with `registry`: those given, else the ones `aac login` saved
/// (or docker's).
fn credentials_for(registry: &str, given: Option<&Credentials>) -> Option<Credentials> {
    given.cloned().or_else(|| super::auth::lookup(registry))
}

impl Client {
    /// Pulls `reference` from its registry into the content store, unpacks it and names it
    /// `normalize_reference(reference)` (so `pull busybox` makes `busybox:latest`, the name
    /// `run busybox` looks up). Blobs already in the content store are not downloaded again.
    pub async fn pull(
        &self,
        reference: &str,
        auth: Option<&Credentials>,
        progress: &(dyn Fn(Progress) + Sync),
    ) -> Result<ImageSummary> {
        let remote = Reference::parse(reference)?;
        let local = normalize_reference(reference)?;
        let auth = credentials_for(&remote.registry, auth);
        let session = Arc::new(Session::new(&remote, auth, "pull"));
        tracing::debug!(reference = %remote, base = %session.base, "pulling");
        let resolved = Self::resolve_remote(&session, &remote).await?;
        let lease = self.create_lease_labeled("pull", Some(&local)).await?;
        let result = self
            .pull_content(&lease, &session, &local, &resolved, progress)
            .await;
        let deleted = self.delete_lease(&lease).await;
        let summary = result?;
        deleted?;
        progress(Progress::Done {
            name: summary.name.clone(),
        });
        Ok(summary)
    }

    async fn resolve_remote(session: &Arc<Session>, remote: &Reference) -> Result<Resolved> {
        let s = session.clone();
        let object = remote.object().to_string();
        let display = remote.to_string();
        let (top_bytes, top_media) = blocking(move || s.get_manifest(&object, &display)).await?;
        let top = Descriptor {
            media_type: top_media,
            digest: sha256_digest(&top_bytes),
            size: top_bytes.len() as i64,
            ..Default::default()
        };
        if let Some(d) = &remote.digest {
            if *d != top.digest {
                return Err(CtrdError::DigestMismatch {
                    what: format!("manifest of {remote}"),
                    expected: d.clone(),
                    actual: top.digest,
                });
            }
        }
        let check_schema = |media: &str| {
            if is_schema1(media) {
                Err(CtrdError::InvalidImage(format!(
                    "{remote} uses the Docker schema 1 manifest format, which is not supported"
                )))
            } else {
                Ok(())
            }
        };
        check_schema(&top.media_type)?;
        if !is_index(&top.media_type) {
            let manifest: Manifest = parse_json(&top_bytes, "image manifest")?;
            return Ok(Resolved {
                manifest,
                manifest_desc: top,
                manifest_bytes: top_bytes,
                index: None,
            });
        }
        let index: Index = parse_json(&top_bytes, "image index")?;
        let chosen = pick_platform(&index)?;
        let pos = index
            .manifests
            .iter()
            .position(|m| m.digest == chosen.digest)
            .unwrap_or(0);
        let s = session.clone();
        let object = chosen.digest.clone();
        let display = format!(
            "{}/{}@{}",
            remote.registry, remote.repository, chosen.digest
        );
        let (bytes, media) = blocking(move || s.get_manifest(&object, &display)).await?;
        check_schema(&media)?;
        let digest = sha256_digest(&bytes);
        if digest != chosen.digest {
            return Err(CtrdError::DigestMismatch {
                what: format!("platform manifest of {remote}"),
                expected: chosen.digest,
                actual: digest,
            });
        }
        let manifest: Manifest = parse_json(&bytes, "image manifest")?;
        Ok(Resolved {
            manifest,
            manifest_desc: Descriptor {
                media_type: if chosen.media_type.is_empty() {
                    media
                } else {
                    chosen.media_type
                },
                digest,
                size: bytes.len() as i64,
                ..Default::default()
            },
            manifest_bytes: bytes,
            index: Some((top, top_bytes, pos)),
        })
    }

    async fn pull_content(
        &self,
        lease: &str,
        session: &Arc<Session>,
        local: &str,
        r: &Resolved,
        progress: &(dyn Fn(Progress) + Sync),
    ) -> Result<ImageSummary> {
        let m = &r.manifest;
        self.lease_resource(lease, "content", &m.config.digest)
            .await?;
        let config_bytes = if self.blob_info(&m.config.digest).await?.is_some() {
            self.read_blob(&m.config.digest).await?
        } else {
            progress(Progress::Writing {
                digest: m.config.digest.clone(),
                size: m.config.size,
            });
            let s = session.clone();
            let desc = m.config.clone();
            blocking(move || s.get_small_blob(&desc)).await?
        };
        let config: ConfigDoc = parse_json(&config_bytes, "image config")?;
        let diff_ids = &config.rootfs.diff_ids;
        if diff_ids.len() != m.layers.len() {
            return Err(CtrdError::InvalidImage(format!(
                "manifest has {} layers but the config lists {} diff_ids",
                m.layers.len(),
                diff_ids.len()
            )));
        }
        for (layer, diff_id) in m.layers.iter().zip(diff_ids) {
            let mut labels = HashMap::new();
            labels.insert("containerd.io/uncompressed".to_string(), diff_id.clone());
            self.download_blob(lease, session, layer, labels, progress)
                .await?;
        }
        self.write_blob(
            lease,
            &m.config.digest,
            m.config.size,
            BlobSource::Bytes(config_bytes),
            config_gc_labels(diff_ids),
        )
        .await?;
        self.write_blob(
            lease,
            &r.manifest_desc.digest,
            r.manifest_desc.size,
            BlobSource::Bytes(r.manifest_bytes.clone()),
            manifest_gc_labels(m),
        )
        .await?;
        let target = match &r.index {
            Some((desc, bytes, pos)) => {
                let mut labels = HashMap::new();
                labels.insert(
                    format!("containerd.io/gc.ref.content.m.{pos}"),
                    r.manifest_desc.digest.clone(),
                );
                self.write_blob(
                    lease,
                    &desc.digest,
                    desc.size,
                    BlobSource::Bytes(bytes.clone()),
                    labels,
                )
                .await?;
                desc.clone()
            }
            None => r.manifest_desc.clone(),
        };
        self.unpack_layers(lease, &m.layers, diff_ids, progress)
            .await?;
        self.put_image(lease, local, target).await
    }

    /// Streams a blob from the registry into the content store (unless it is there).
    async fn download_blob(
        &self,
        lease: &str,
        session: &Arc<Session>,
        desc: &Descriptor,
        labels: HashMap<String, String>,
        progress: &(dyn Fn(Progress) + Sync),
    ) -> Result<()> {
        self.lease_resource(lease, "content", &desc.digest).await?;
        if self.blob_info(&desc.digest).await?.is_some() {
            // Present (and now held by the lease): write_blob only brings its labels up to date.
            return self
                .write_blob(
                    lease,
                    &desc.digest,
                    desc.size,
                    BlobSource::Bytes(Vec::new()),
                    labels,
                )
                .await;
        }
        progress(Progress::Writing {
            digest: desc.digest.clone(),
            size: desc.size,
        });
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>>>(4);
        let s = session.clone();
        let d = desc.clone();
        let reader = tokio::task::spawn_blocking(move || s.stream_blob(&d, &tx));
        let written = self
            .write_blob(
                lease,
                &desc.digest,
                desc.size,
                BlobSource::Stream(rx),
                labels,
            )
            .await;
        if let Err(e) = reader.await {
            tracing::warn!(error = %e, "blob download task failed");
        }
        written
    }

    /// Pushes the local image `reference` to the registry it names.
    pub async fn push(
        &self,
        reference: &str,
        auth: Option<&Credentials>,
        progress: &(dyn Fn(Progress) + Sync),
    ) -> Result<Descriptor> {
        self.push_as(reference, reference, auth, progress).await
    }

    /// Pushes the local image `local` as `remote` (`registry/repository:tag`). Only this
    /// platform's manifest is pushed. Returns the pushed manifest's descriptor.
    pub async fn push_as(
        &self,
        local: &str,
        remote: &str,
        auth: Option<&Credentials>,
        progress: &(dyn Fn(Progress) + Sync),
    ) -> Result<Descriptor> {
        let target_ref = Reference::parse(remote)?;
        let local_name = normalize_reference(local)?;
        let img = self
            .get_image(&local_name)
            .await?
            .ok_or_else(|| CtrdError::NotFound {
                kind: "image",
                name: local_name.clone(),
            })?;
        let target = img
            .target
            .ok_or_else(|| CtrdError::InvalidImage(format!("image {local_name} has no target")))?;
        let mut desc = Descriptor {
            media_type: target.media_type,
            digest: target.digest,
            size: target.size,
            ..Default::default()
        };
        if is_index(&desc.media_type) {
            let index: Index = parse_json(&self.read_blob(&desc.digest).await?, "image index")?;
            desc = pick_platform(&index)?;
            desc.platform = None;
            desc.annotations.clear();
        }
        let manifest_bytes = self.read_blob(&desc.digest).await?;
        let manifest: Manifest = parse_json(&manifest_bytes, "image manifest")?;
        if desc.media_type.is_empty() {
            desc.media_type = manifest
                .media_type
                .clone()
                .unwrap_or_else(|| MEDIA_OCI_MANIFEST.to_string());
        }
        desc.size = manifest_bytes.len() as i64;
        let auth = credentials_for(&target_ref.registry, auth);
        let session = Arc::new(Session::new(&target_ref, auth, "pull,push"));
        tracing::debug!(local = %local_name, remote = %target_ref, "pushing");
        for blob in manifest
            .layers
            .iter()
            .chain(std::iter::once(&manifest.config))
        {
            let s = session.clone();
            let digest = blob.digest.clone();
            if blocking(move || s.has_blob(&digest)).await? {
                continue;
            }
            progress(Progress::Writing {
                digest: blob.digest.clone(),
                size: blob.size,
            });
            self.upload_blob(&session, blob).await?;
        }
        let object = match (&target_ref.tag, &target_ref.digest) {
            (_, Some(d)) if *d != desc.digest => {
                return Err(CtrdError::DigestMismatch {
                    what: format!("manifest pushed as {target_ref}"),
                    expected: d.clone(),
                    actual: desc.digest,
                })
            }
            (Some(t), _) => t.clone(),
            _ => desc.digest.clone(),
        };
        let s = session.clone();
        let media = desc.media_type.clone();
        blocking(move || s.put_manifest(&object, &media, &manifest_bytes)).await?;
        progress(Progress::Done {
            name: target_ref.to_string(),
        });
        Ok(desc)
    }

    /// Uploads one blob from the content store: Content.Read feeds a monolithic PUT.
    async fn upload_blob(&self, session: &Arc<Session>, desc: &Descriptor) -> Result<()> {
        let s = session.clone();
        let digest = desc.digest.clone();
        let url = blocking(move || s.start_upload(&digest)).await?;
        let req = self.req(ReadContentRequest {
            digest: desc.digest.clone(),
            offset: 0,
            size: 0,
        });
        let mut stream = match self.content().read(req).await {
            Ok(s) => s.into_inner(),
            Err(st) if st.code() == tonic::Code::NotFound => {
                return Err(CtrdError::NotFound {
                    kind: "blob",
                    name: desc.digest.clone(),
                })
            }
            Err(st) => return Err(CtrdError::grpc("Content.Read", st)),
        };
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let feeder = tokio::spawn(async move {
            while let Some(chunk) = stream.next().await {
                let item = chunk
                    .map(|c| c.data)
                    .map_err(|st| format!("Content.Read: {}", st.message()));
                let failed = item.is_err();
                if tx.send(item).await.is_err() || failed {
                    break;
                }
            }
        });
        let s = session.clone();
        let size = desc.size;
        let put = blocking(move || {
            s.finish_upload(
                &url,
                size,
                ChannelReader {
                    rx,
                    buf: Vec::new(),
                    pos: 0,
                },
            )
        })
        .await;
        feeder.abort();
        put
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> Reference {
        Reference::parse(s).unwrap()
    }

    #[test]
    fn docker_hub_defaults() {
        let x = r("busybox");
        assert_eq!(x.registry, "docker.io");
        assert_eq!(x.repository, "library/busybox");
        assert_eq!(x.tag.as_deref(), Some("latest"));
        assert_eq!(x.to_string(), "docker.io/library/busybox:latest");
        assert_eq!(x.api_host(), "registry-1.docker.io");
        assert!(!x.is_insecure());
        assert_eq!(r("user/app:1").repository, "user/app");
        assert_eq!(r("index.docker.io/user/app").registry, "docker.io");
    }

    #[test]
    fn registry_hosts() {
        let x = r("127.0.0.1:5000/aac/busybox:1.0");
        assert_eq!(x.registry, "127.0.0.1:5000");
        assert_eq!(x.repository, "aac/busybox");
        assert_eq!(x.tag.as_deref(), Some("1.0"));
        assert!(x.is_insecure());
        let x = r("localhost/busybox");
        assert_eq!(x.registry, "localhost");
        assert_eq!(x.repository, "busybox");
        assert!(x.is_insecure());
        let x = r("ghcr.io/org/app");
        assert_eq!(x.registry, "ghcr.io");
        assert!(!x.is_insecure());
        assert_eq!(r("[::1]:5000/a").registry, "[::1]:5000");
        assert!(r("[::1]:5000/a").is_insecure());
        // A first component without '.', ':' or localhost is a path.
        assert_eq!(r("myhost/app").registry, "docker.io");
    }

    #[test]
    fn digests() {
        let d = format!("sha256:{}", "a".repeat(64));
        let x = r(&format!("busybox@{d}"));
        assert_eq!(x.digest.as_deref(), Some(d.as_str()));
        assert_eq!(x.tag, None);
        assert_eq!(x.object(), d);
        let x = r(&format!("localhost:5000/a:1@{d}"));
        assert_eq!(x.tag.as_deref(), Some("1"));
        assert_eq!(x.object(), d);
        assert!(Reference::parse("busybox@sha256:abc").is_err());
        assert!(Reference::parse("busybox@md5:aaaa").is_err());
    }

    #[test]
    fn bad_references() {
        for bad in [
            "",
            "a b",
            "Busybox",
            "busybox:",
            "busybox:-x",
            "/busybox",
            "a//b",
            "a/",
            "-a",
            "a..b",
            "localhost:5000/",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn insecure_list() {
        assert!(insecure("reg.lan:5000", "other, reg.lan:5000"));
        assert!(insecure("reg.lan:5000", "reg.lan"));
        assert!(!insecure("reg.lan:5000", "reg.lan:6000"));
        assert!(!insecure("reg.lan", ""));
        assert!(insecure("localhost:1", ""));
    }

    #[test]
    fn challenges() {
        let (s, p) = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull,push""#,
        )
        .unwrap();
        assert_eq!(s, "bearer");
        assert_eq!(p["realm"], "https://auth.docker.io/token");
        assert_eq!(p["service"], "registry.docker.io");
        assert_eq!(p["scope"], "repository:library/busybox:pull,push");
        let (s, p) = parse_challenge(r#"Basic realm="basic-realm""#).unwrap();
        assert_eq!(s, "basic");
        assert_eq!(p["realm"], "basic-realm");
        let (s, p) = parse_challenge("Basic").unwrap();
        assert_eq!(s, "basic");
        assert!(p.is_empty());
        let (_, p) = parse_challenge(r#"Bearer realm=x, error="a\"b""#).unwrap();
        assert_eq!(p["realm"], "x");
        assert_eq!(p["error"], "a\"b");
    }

    #[test]
    fn error_bodies() {
        let body = br#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required","detail":null}]}"#;
        assert_eq!(error_text(body), "authentication required (UNAUTHORIZED)");
        assert_eq!(error_text(b"plain text\n"), "plain text");
    }

    #[test]
    fn media_types() {
        assert_eq!(
            manifest_media_type("application/json", br#"{"schemaVersion":2,"manifests":[]}"#),
            MEDIA_OCI_INDEX
        );
        assert_eq!(
            manifest_media_type(
                "application/vnd.docker.distribution.manifest.v2+json",
                br#"{"schemaVersion":2,"config":{}}"#
            ),
            MEDIA_DOCKER_MANIFEST
        );
        assert_eq!(
            manifest_media_type("", br#"{"mediaType":"x/y","schemaVersion":2}"#),
            "x/y"
        );
    }

    #[test]
    fn credentials_hide_password() {
        let c = Credentials::new("u", "secret");
        assert!(!format!("{c:?}").contains("secret"));
        assert_eq!(c.basic_header(), "Basic dTpzZWNyZXQ=");
    }
}
