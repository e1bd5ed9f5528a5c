// TEMP STUB (not committed)
use oci_spec::runtime::LinuxSeccomp;
#[derive(Debug, thiserror::Error)]
#[error("x")]
pub struct SeccompError;
pub fn default_profile(_c: &[String]) -> LinuxSeccomp {
    LinuxSeccomp::default()
}
pub fn load_profile(_p: &std::path::Path, _c: &[String]) -> Result<LinuxSeccomp, SeccompError> {
    Err(SeccompError)
}
