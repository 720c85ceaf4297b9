//! Secret references as the loaded config holds them, each with the key it
//! was read from, so the binary that resolves one names that key when it cannot.

use std::fmt;

use super::ConfigError;
use crate::secret::{Secret, SecretRef};
use crate::standard_webhooks::SigningKey;

/// An `env:`/`file:` reference and the config key that holds it
/// (`sources.whatzme.secrets[1]`). The reference was checked at load; only
/// the binary that uses the secret reads it ([`ConfigSecret::resolve`]), so
/// the worker never needs the gateway's secrets, nor the other way round.
#[derive(Clone, PartialEq, Eq)]
pub struct ConfigSecret {
    key: String,
    reference: SecretRef,
}

impl ConfigSecret {
    pub(crate) fn new(key: impl Into<String>, reference: SecretRef) -> Self {
        Self {
            key: key.into(),
            reference,
        }
    }

    /// Each reference of a list read from `key`, named `key[i]`.
    pub(crate) fn list(key: &str, references: Vec<SecretRef>) -> Vec<Self> {
        references
            .into_iter()
            .enumerate()
            .map(|(i, reference)| Self::new(format!("{key}[{i}]"), reference))
            .collect()
    }

    /// The config key this reference was read from.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The reference as written.
    pub fn reference(&self) -> &SecretRef {
        &self.reference
    }

    /// Reads the secret; an error names the key and the variable or file.
    pub fn resolve(&self) -> Result<Secret, ConfigError> {
        self.reference
            .resolve()
            .map_err(|source| ConfigError::Secret {
                key: self.key.clone(),
                source,
            })
    }

    /// Reads the secret and decodes it as a Standard Webhooks `whsec_` key.
    pub fn signing_key(&self) -> Result<SigningKey, ConfigError> {
        SigningKey::from_secret(&self.resolve()?).map_err(|source| ConfigError::BadSecret {
            key: self.key.clone(),
            source,
        })
    }
}

impl fmt::Debug for ConfigSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} = {:?}", self.key, self.reference)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_names_each_entry_and_an_unreadable_one_names_its_key() {
        let list = ConfigSecret::list(
            "sources.s.secrets",
            vec![
                SecretRef::Env("SLUICE_TEST_SURELY_UNSET_A".into()),
                SecretRef::Env("SLUICE_TEST_SURELY_UNSET_B".into()),
            ],
        );
        assert_eq!(list[1].key(), "sources.s.secrets[1]");
        let error = list[1].resolve().expect_err("unset").to_string();
        assert!(error.contains("sources.s.secrets[1]"), "{error}");
        assert!(error.contains("SLUICE_TEST_SURELY_UNSET_B"), "{error}");
    }

    #[test]
    fn a_secret_that_is_not_whsec_is_refused_without_showing_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("s");
        std::fs::write(&path, "hunter2\n").expect("file");
        let secret = ConfigSecret::new("routes[0] (crm).secret", SecretRef::File(path));
        let error = secret.signing_key().err().expect("not whsec");
        assert!(matches!(error, ConfigError::BadSecret { .. }), "{error}");
        let text = error.to_string();
        assert!(text.contains("routes[0] (crm).secret"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
        assert!(!format!("{secret:?}").contains("hunter2"));
    }
}
