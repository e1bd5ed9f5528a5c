//! Volume verbs: create, list, inspect, remove, prune (named volumes, both backends).

use std::collections::BTreeMap;

use super::{Engine, Result};
use crate::volumes::{self, Volume};

impl Engine {
    /// Create a named volume (a random name when `None`); an existing one is returned as it is.
    pub fn volume_create(
        &self,
        name: Option<&str>,
        labels: BTreeMap<String, String>,
    ) -> Result<Volume> {
        let name = match name {
            Some(n) => n.to_string(),
            None => volumes::anonymous_name()?,
        };
        Ok(volumes::create(&self.dirs, &name, labels, false)?)
    }

    /// Every volume with the number of containers using it.
    pub fn volume_list(&self) -> Result<Vec<(Volume, usize)>> {
        let mut out = Vec::new();
        for v in volumes::list(&self.dirs)? {
            let n = volumes::users(&self.dirs, &v.name)?.len();
            out.push((v, n));
        }
        Ok(out)
    }

    /// One volume with the number of containers using it.
    pub fn volume_inspect(&self, name: &str) -> Result<(Volume, usize)> {
        let v = volumes::get(&self.dirs, name)?;
        let n = volumes::users(&self.dirs, name)?.len();
        Ok((v, n))
    }

    /// Remove a volume; refused while any container (running or not) uses it.
    pub fn volume_remove(&self, name: &str) -> Result<()> {
        Ok(volumes::remove(&self.dirs, name)?)
    }

    /// Remove unused anonymous volumes (every unused one with `all`): names and bytes freed.
    pub fn volume_prune(&self, all: bool) -> Result<(Vec<String>, u64)> {
        Ok(volumes::prune(&self.dirs, all)?)
    }
}
