//! The wrapper init of aac containers that take secrets as environment variables, as bytes:
//! a static executable built from `program/main.rs` (see its documentation and build.rs).
//! aac writes it into the agent's private secrets tmpfs and makes it the container's first
//! process: `aac-init ENVFILE COMMAND [ARG...]`.

/// The executable.
pub const AAC_INIT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/aac-init"));

#[cfg(test)]
mod tests {
    #[test]
    fn is_a_static_elf_executable() {
        let b = super::AAC_INIT;
        assert_eq!(&b[..4], b"\x7fELF");
        // ET_EXEC (not a PIE, not dynamic): no loader needed.
        assert_eq!(u16::from_le_bytes([b[16], b[17]]), 2);
        assert!(!b.windows(b"ld-linux".len()).any(|w| w == b"ld-linux"));
    }
}
