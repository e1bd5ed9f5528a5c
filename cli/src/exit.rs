//! docker-style exit codes: 125 when aac itself fails, 126 when the command cannot be
//! executed, 127 when it is not found (the backends report those two); otherwise the
//! container's own status.

use std::process::ExitCode;

/// aac failed (bad input, runtime unreachable, ...).
pub const EXIT_AAC: u8 = 125;

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

    /// Print as `aac: <error>: <cause>` (secret-looking values masked) and turn into the process exit code.
    pub fn report(self) -> ExitCode {
        // Values of secret-looking variables an error quotes are shown as `***`.
        eprintln!(
            "aac: {}",
            aac_runtime::secrets::redact::text(&format!("{:#}", self.error))
        );
        ExitCode::from(self.code)
    }
}

impl<E: Into<anyhow::Error>> From<E> for CliError {
    /// 125, or the code an engine error stands for (126/127 when a command cannot run).
    fn from(e: E) -> Self {
        let error = e.into();
        let code = error
            .downcast_ref::<aac_runtime::engine::EngineError>()
            .map_or(EXIT_AAC, |e| e.exit_code());
        CliError { code, error }
    }
}

pub type CliResult<T> = Result<T, CliError>;
