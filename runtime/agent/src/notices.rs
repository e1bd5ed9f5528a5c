//! Fields aac accepts but does not act on when it runs an agent.
//!
//! agent.yaml describes more than a container: the model an agent calls, its packages, what it
//! exposes for monitoring. aac keeps all of it (for `aac kube
//! generate` and `aac inspect`), but running the agent uses none of it, and the user must not
//! believe otherwise: each such field written in the file gets a note (`aac validate` prints
//! them with their position; `aac up` names them in one line).

use crate::diagnostics::Diagnostic;
use crate::model::Agent;
use crate::positions::Positions;

/// What running an agent does not do with each descriptive field.
const NOT_ACTED_ON: &[(&str, &str)] = &[
    (
        "spec.runtime",
        "describes the agent's language runtime; aac runs the image as it is",
    ),
    (
        "spec.model",
        "describes the model the agent's code calls; pass what the code needs with \
         spec.environment or spec.config",
    ),
    (
        "spec.models",
        "describes the models the agent's code calls; pass what the code needs with \
         spec.environment or spec.config",
    ),
    (
        "spec.capabilities",
        "describes what the agent does (Linux capabilities are spec.security.capabilities)",
    ),
    (
        "spec.dependencies",
        "lists the agent's packages, which its image build installs",
    ),
    (
        "spec.monitoring",
        "describes what the agent's own code exposes (metrics, log format, tracing)",
    ),
];

/// The prefix of every such note, so that users (and `aac up`) can tell them apart.
pub const NOT_ACTED_ON_PREFIX: &str = "not acted on by aac when it runs the agent: ";

/// A note for each descriptive field the file writes.
pub fn not_acted_on(_agent: &Agent, positions: &Positions) -> Vec<Diagnostic> {
    NOT_ACTED_ON
        .iter()
        .filter(|(path, _)| positions.value_exact(path).is_some())
        .map(|(path, why)| {
            Diagnostic::new(*path, format!("{NOT_ACTED_ON_PREFIX}{why}")).at(positions.key(path))
        })
        .collect()
}

/// Whether `note` is one of [`not_acted_on`]'s.
pub fn is_not_acted_on(note: &Diagnostic) -> bool {
    note.message.starts_with(NOT_ACTED_ON_PREFIX)
}
