use std::fmt;

/// One problem in a config: where it is and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file the config came from (or a label such as `<control-plane>`).
    pub file: String,
    /// Dotted path inside the document, e.g. `features.ai_search.hierarchy[2]`; empty for the root.
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(f, "{}: {}: {}", self.file, self.path, self.message)
        }
    }
}

/// Every problem found in one config. A config with any problem is rejected whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        write!(f, "invalid routing config ({n} problem{})", if n == 1 { "" } else { "s" })?;
        for e in &self.0 {
            write!(f, "\n  - {e}")?;
        }
        Ok(())
    }
}

impl ConfigErrors {
    pub fn single(file: &str, path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigErrors(vec![ConfigError { file: file.to_owned(), path: path.into(), message: message.into() }])
    }
}
