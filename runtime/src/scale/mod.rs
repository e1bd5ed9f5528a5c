//! Horizontal scaling: replicas of one agent behind one published port, the per-agent
//! supervisor that owns the proxy and the autoscaler, and the HPA algorithm it applies.

pub mod group;
pub mod hpa;
pub mod proxy;
pub mod supervisor;

/// RFC 3339 times in JSON.
pub(crate) mod time_serde {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::SystemTime;

    pub fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&crate::logs::format_time(*t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_rfc3339_weak(s.trim_end_matches('Z')).map_err(serde::de::Error::custom)
    }
}
