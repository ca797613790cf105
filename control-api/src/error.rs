//! Validation errors that name the resource and the field path.

use std::fmt;

/// One problem in a configuration, e.g.
/// `cluster "orders": endpoints[2].address: invalid socket address "10.0.0.1:99999"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationError {
    /// The resource, e.g. `cluster "orders"`, or `config` for top-level fields.
    pub resource: String,
    /// The field path inside the resource, e.g. `endpoints[2].address`.
    pub field: String,
    pub message: String,
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}: {}", self.resource, self.message)
        } else {
            write!(f, "{}: {}: {}", self.resource, self.field, self.message)
        }
    }
}

/// A configuration rejected whole, with every problem found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct InvalidConfig {
    pub errors: Vec<ValidationError>,
}

impl fmt::Display for InvalidConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.errors.len();
        write!(
            f,
            "invalid configuration ({n} error{})",
            if n == 1 { "" } else { "s" }
        )?;
        for e in &self.errors {
            write!(f, "\n  - {e}")?;
        }
        Ok(())
    }
}

/// Collects errors for one resource while a conversion walks it.
pub(crate) struct Errors<'a> {
    resource: String,
    sink: &'a mut Vec<ValidationError>,
}

impl<'a> Errors<'a> {
    pub(crate) fn new(resource: String, sink: &'a mut Vec<ValidationError>) -> Self {
        Self { resource, sink }
    }

    pub(crate) fn push(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.sink.push(ValidationError {
            resource: self.resource.clone(),
            field: field.into(),
            message: message.into(),
        });
    }

    /// Errors recorded so far (for all resources), to tell whether a part added any.
    pub(crate) fn count(&self) -> usize {
        self.sink.len()
    }

    /// Records the error of `r` (if any) and returns its value.
    pub(crate) fn check<T, E: fmt::Display>(
        &mut self,
        field: impl Into<String>,
        r: Result<T, E>,
    ) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                self.push(field, e.to_string());
                None
            }
        }
    }
}
