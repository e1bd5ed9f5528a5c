//! Kubernetes export and import for aac agents.
//!
//! - [`generate()`] turns an [`Agent`](aac_agent::Agent) into Kubernetes manifests (Deployment,
//!   Service, HorizontalPodAutoscaler, ConfigMaps, PersistentVolumeClaims, NetworkPolicy and,
//!   on request, a CiliumNetworkPolicy), rendered by [`to_yaml`] as one multi-document YAML text
//!   in a stable order.
//! - [`play()`] reads Kubernetes YAML (Deployments, Pods, Services, ConfigMaps, Secrets, and the
//!   HorizontalPodAutoscalers, PersistentVolumeClaims and network policies `generate` writes)
//!   back into agents, with a warning naming every field aac does not carry out, and the line
//!   it is on.
//! - [`local`] plays a file on this host through aac's engine (`aac kube play`/`down`).
//! - [`check`] holds the checks a JSON schema cannot make (selectors match template labels,
//!   the HPA targets the Deployment, probe ports exist, Service selectors match).
//!
//! What Kubernetes cannot say natively (restart policy other than `Always`, a pids limit, the
//! log rotation, ...) travels in `agent.dev/*` annotations ([`annotations`]), so that
//! `play(generate(agent))` gives the agent back.

pub mod annotations;
pub mod check;
pub mod generate;
pub mod local;
pub mod manifest;
pub mod names;
pub mod play;
pub mod positions;
pub mod quantity;

pub use generate::{
    effective_autoscaler, generate, Autoscaler, FileSource, FqdnPolicy, GenerateError, Generated,
    HostFiles, NoSecrets, Options, SecretSource, Warning,
};
pub use manifest::{to_yaml, Manifest};
pub use play::{play, ConfigMapObject, Play, PlayOptions, PlayVolume, PlayedAgent, SecretObject};
