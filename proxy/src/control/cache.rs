//! The last good dynamic configuration on disk (`--cache-dir`), so a sidecar restarted while
//! the control plane is unreachable serves what it last had instead of nothing. Written
//! atomically (temporary file, then rename) with mode 0600 after every applied update.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use crate::sources::Dynamic;

const FILE: &str = "remora-snapshot.json";

pub fn path(dir: &Path) -> PathBuf {
    dir.join(FILE)
}

/// Writes `dynamic` for `service` into `dir`.
pub fn store(dir: &Path, service: &str, dynamic: &Dynamic) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let doc = serde_json::json!({
        "service": service,
        "configVersion": dynamic.config_version,
        "endpointsVersion": dynamic.endpoints_version,
        "config": remora_control_api::load::to_json(&dynamic.config),
    });
    let bytes = serde_json::to_vec(&doc).map_err(std::io::Error::other)?;
    let tmp = dir.join(format!(".{FILE}.{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(&bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path(dir))
}

/// Reads the cache in `dir`. `Ok(None)` when there is none; an error says why a cache that
/// exists cannot be used (it is then ignored, never trusted half-way).
pub fn load(dir: &Path, service: &str) -> Result<Option<Dynamic>, String> {
    let file = path(dir);
    let text = match std::fs::read_to_string(&file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", file.display())),
    };
    let doc: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", file.display()))?;
    let field = |name: &str| {
        doc.get(name)
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| format!("{}: {name}: missing", file.display()))
    };
    let cached_service = field("service")?;
    if cached_service != service {
        return Err(format!(
            "{}: written for service {cached_service:?}, this proxy is {service:?}",
            file.display()
        ));
    }
    let config = doc
        .get("config")
        .cloned()
        .ok_or_else(|| format!("{}: config: missing", file.display()))?;
    let config =
        serde_json::from_value(config).map_err(|e| format!("{}: config: {e}", file.display()))?;
    let dynamic = Dynamic {
        config,
        config_version: field("configVersion")?,
        endpoints_version: field("endpointsVersion")?,
    };
    remora_control_api::validate(&dynamic.config)
        .map_err(|e| format!("{}: {e}", file.display()))?;
    Ok(Some(dynamic))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Dynamic {
        let config = remora_control_api::load::from_yaml(
            "clusters: [{ name: orders, endpoints: [{ address: \"127.0.0.1:80\" }] }]\n",
        )
        .unwrap();
        Dynamic {
            config,
            config_version: "c1".into(),
            endpoints_version: "e1".into(),
        }
    }

    #[test]
    fn round_trip_and_refusals() {
        let dir = std::env::temp_dir().join(format!("remora-cache-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(load(&dir, "web").unwrap(), None);
        store(&dir, "web", &sample()).unwrap();
        assert_eq!(load(&dir, "web").unwrap(), Some(sample()));
        let mode = std::fs::metadata(path(&dir)).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
        assert!(
            load(&dir, "other")
                .unwrap_err()
                .contains("written for service")
        );
        std::fs::write(path(&dir), "{not json").unwrap();
        assert!(load(&dir, "web").is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
