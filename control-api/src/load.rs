//! Reading a configuration file: YAML (or JSON, a subset of YAML) in the canonical proto3 JSON
//! mapping of [`proto::Config`].

use crate::proto;

/// Files larger than this are refused before parsing.
pub const MAX_CONFIG_BYTES: usize = 16 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("configuration is {0} bytes; the limit is {MAX_CONFIG_BYTES}")]
    TooLarge(usize),
    #[error("malformed configuration: {0}")]
    Syntax(String),
}

/// Parses YAML or JSON into the proto configuration. Unknown fields and bad enum values are
/// errors that carry line and column.
pub fn from_yaml(text: &str) -> Result<proto::Config, LoadError> {
    document(text)
}

/// Parses YAML or JSON into any schema message (a proxy `Config`, a control-plane `Mesh`)
/// with the same rules: size limit, unknown fields and bad enum values rejected with line and
/// column, an empty document is the message's default.
pub fn document<T: serde::de::DeserializeOwned + Default>(text: &str) -> Result<T, LoadError> {
    if text.len() > MAX_CONFIG_BYTES {
        return Err(LoadError::TooLarge(text.len()));
    }
    if text.trim().is_empty() {
        return Ok(T::default());
    }
    serde_saphyr::from_str::<T>(text).map_err(|e| LoadError::Syntax(e.to_string()))
}

/// Renders a configuration as canonical proto3 JSON (what `/config` prints).
pub fn to_json(config: &proto::Config) -> serde_json::Value {
    serde_json::to_value(config).unwrap_or(serde_json::Value::Null)
}
