//! Turning one control-stream update into the next dynamic configuration, without touching
//! the running proxy: a pure function, so every byte the control plane sends can be fuzzed
//! through it. Errors name the field, and become the NACK's text.

use remora_control_api::proto::Config;
use remora_control_api::proto::control::{ResourceType, Update};

use crate::sources::Dynamic;

/// Upper bound on endpoints in one cluster after an incremental update.
pub const MAX_ENDPOINTS_PER_CLUSTER: usize = 100_000;

/// The dynamic configuration that `update` leads to from `current`, validated.
pub fn prepare(update: &Update, current: Option<&Dynamic>) -> Result<Dynamic, String> {
    if update.version.is_empty() {
        return Err("version: must not be empty".into());
    }
    let next = match ResourceType::try_from(update.r#type) {
        Ok(ResourceType::Config) => {
            let mut config = update
                .config
                .clone()
                .ok_or("config: missing in a CONFIG update")?;
            config.version.clone_from(&update.version);
            Dynamic {
                config,
                config_version: update.version.clone(),
                endpoints_version: update.endpoints_version.clone(),
            }
        }
        Ok(ResourceType::Endpoints) => {
            let current = current
                .ok_or("endpoints: no configuration received yet to apply endpoint changes to")?;
            let mut config = current.config.clone();
            apply_endpoints(&mut config, update)?;
            Dynamic {
                config,
                config_version: current.config_version.clone(),
                endpoints_version: update.version.clone(),
            }
        }
        Ok(ResourceType::Unspecified) | Err(_) => {
            return Err(format!("type: unknown resource type {}", update.r#type));
        }
    };
    remora_control_api::validate(&next.config).map_err(|e| e.to_string())?;
    Ok(next)
}

fn apply_endpoints(config: &mut Config, update: &Update) -> Result<(), String> {
    for (i, change) in update.endpoints.iter().enumerate() {
        let cluster = config
            .clusters
            .iter_mut()
            .find(|c| c.name == change.cluster)
            .ok_or_else(|| {
                format!(
                    "endpoints[{i}].cluster: {:?} is not in the configuration",
                    change.cluster
                )
            })?;
        cluster
            .endpoints
            .retain(|e| !change.removed.contains(&e.address));
        for (j, endpoint) in change.upserted.iter().enumerate() {
            if change.removed.contains(&endpoint.address) {
                return Err(format!(
                    "endpoints[{i}].upserted[{j}].address: {:?} is also removed in the same update",
                    endpoint.address
                ));
            }
            match cluster
                .endpoints
                .iter_mut()
                .find(|e| e.address == endpoint.address)
            {
                Some(existing) => existing.clone_from(endpoint),
                None => cluster.endpoints.push(endpoint.clone()),
            }
        }
        if cluster.endpoints.len() > MAX_ENDPOINTS_PER_CLUSTER {
            return Err(format!(
                "endpoints[{i}]: cluster {:?} would have {} endpoints; the limit is {MAX_ENDPOINTS_PER_CLUSTER}",
                change.cluster,
                cluster.endpoints.len()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
