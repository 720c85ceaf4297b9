//! [`ConfigError`]: a configuration that cannot be used, naming the key at fault and what to do.

use crate::secret::SecretError;
use crate::standard_webhooks::BadSecret;

/// A configuration that cannot be used, with the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file or the environment does not read into the config's types;
    /// figment's message names the key and where it was set.
    #[error("{0}")]
    Load(Box<figment::Error>),
    /// A value the types accept but the config does not.
    #[error("config key `{key}`: {problem}")]
    Invalid { key: String, problem: String },
    /// A secret reference that cannot be read (an unset variable, a missing file).
    #[error("config key `{key}`: {source}")]
    Secret {
        key: String,
        #[source]
        source: SecretError,
    },
    /// A secret that should be a Standard Webhooks `whsec_` key and is not.
    #[error("config key `{key}`: {source}")]
    BadSecret {
        key: String,
        #[source]
        source: BadSecret,
    },
}

impl ConfigError {
    pub fn invalid(key: impl Into<String>, problem: impl Into<String>) -> Self {
        Self::Invalid {
            key: key.into(),
            problem: problem.into(),
        }
    }
}
