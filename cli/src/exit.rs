//! docker-style exit codes: 125 when aac itself fails, 126 when the command cannot be
//! executed, 127 when it is not found (the backends report those two); otherwise the
//! container's own status.

use std::process::ExitCode;

/// aac failed (bad input, runtime unreachable, ...).
pub const EXIT_AAC: u8 = 125;
/// The container's command was not found.
pub const EXIT_NOT_FOUND: u8 = 127;

/// An error with the exit code it should produce.
#[derive(Debug)]
pub struct CliError {
    pub code: u8,
    pub error: anyhow::Error,
}

impl CliError {
    pub fn aac(error: anyhow::Error) -> Self {
        CliError {
            code: EXIT_AAC,
            error,
        }
    }

    pub fn with_code(code: u8, error: anyhow::Error) -> Self {
        CliError { code, error }
    }

    /// Print as `aac: <error>: <cause>` and turn into the process exit code.
    pub fn report(self) -> ExitCode {
        eprintln!("aac: {:#}", self.error);
        ExitCode::from(self.code)
    }
}

impl<E: Into<anyhow::Error>> From<E> for CliError {
    fn from(e: E) -> Self {
        CliError::aac(e.into())
    }
}

pub type CliResult<T> = Result<T, CliError>;
