//! The agent.yaml model of aac: types, decoding with source positions, validation.
//!
//! The flow is one way: [`decode`] turns YAML into the model and records where every value
//! came from, callers may change the model (the CLI applies docker-style flags), then
//! [`check`] validates the result once, reporting every problem with file:line:column.

pub mod decode;
pub mod diagnostics;
pub mod egress;
pub mod limits;
pub mod model;
pub mod notices;
pub mod positions;
pub mod source;
pub mod validate;
pub mod values;

use std::path::Path;

pub use decode::{decode_file, decode_source, decode_str, Decoded};
pub use diagnostics::{Diagnostic, Diagnostics, Location};
pub use egress::{Allowance, EgressPolicy, HostMatch, HostPattern};
pub use model::*;
pub use positions::Positions;
pub use validate::validate;

/// Validate a decoded agent (after any changes the caller made), adding the caller's own
/// `problems` (bad flags, say): every problem at once, in source order.
pub fn check(decoded: Decoded, problems: Vec<Diagnostic>) -> Result<Agent, Diagnostics> {
    check_noted(decoded, problems).map(|(agent, _)| agent)
}

/// [`check`], also returning the notes on what was accepted ([`Decoded::notes`]).
pub fn check_noted(
    decoded: Decoded,
    problems: Vec<Diagnostic>,
) -> Result<(Agent, Vec<Diagnostic>), Diagnostics> {
    let Decoded {
        agent,
        positions,
        problems: mut diags,
        notes,
    } = decoded;
    let undecoded: Vec<String> = diags.iter().map(|d| d.path.clone()).collect();
    diags.extend(problems);
    diags.extend(
        validate(&agent, Some(&positions))
            .into_iter()
            .filter(|v| !decode::about_undecoded(&undecoded, &v.path)),
    );
    if diags.is_empty() {
        Ok((agent, notes))
    } else {
        diagnostics::sort(&mut diags);
        Err(Diagnostics(diags))
    }
}

/// Read, decode and validate an agent.yaml.
pub fn load_file(path: &Path) -> Result<Agent, Diagnostics> {
    check(decode_file(path)?, Vec::new())
}

/// [`load_file`], with the notes on what was accepted.
pub fn load_file_noted(path: &Path) -> Result<(Agent, Vec<Diagnostic>), Diagnostics> {
    check_noted(decode_file(path)?, Vec::new())
}

/// Decode and validate agent.yaml text; `file` labels diagnostics, `base_dir` resolves
/// relative paths.
pub fn load_str(src: &str, file: Option<&Path>, base_dir: &Path) -> Result<Agent, Diagnostics> {
    check(decode_str(src, file, base_dir)?, Vec::new())
}
