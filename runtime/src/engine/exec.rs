//! `exec`: run a command in a running container, on the caller's standard streams.

use crate::backend::ExecRequest;

use super::{Container, Engine, EngineError, Result};

impl Engine {
    /// Run `req` in the running container `c`; returns the command's exit code (126/127 as
    /// errors when it cannot be run).
    pub async fn exec(&self, c: &Container, req: &ExecRequest) -> Result<i32> {
        let c = self.ensure_monitor(c.clone()).await;
        if !self.is_running(&c).await {
            return Err(EngineError::State(format!(
                "container {} is not running",
                c.rec.name
            )));
        }
        let mut req = req.clone();
        let mut env = crate::secrets::delivery::env_values(
            &crate::secrets::Store::new(&self.dirs),
            &c.rec.agent,
        )?;
        // An explicit `-e` wins over the secret of the same name.
        env.0.retain(|(k, _)| {
            !req.env
                .iter()
                .any(|e| e.split_once('=').map_or(e.as_str(), |(n, _)| n) == k)
        });
        req.secret_env = env;
        Ok(self.task(&c).await?.exec(&req).await?)
    }
}
