//! Any text given to the agent.yaml loader yields an agent or diagnostics, never a panic.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(src) = std::str::from_utf8(data) {
        match aac_agent::load_str(src, Some(Path::new("agent.yaml")), Path::new("/base")) {
            Ok(agent) => {
                // a loaded agent is valid and survives a second validation
                assert!(aac_agent::validate(&agent, None).is_empty());
            }
            Err(d) => assert!(!d.0.is_empty()),
        }
    }
});
