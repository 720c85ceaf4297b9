//! Sources: the providers allowed to POST, each with its scheme and extractor.
//!
//! Built once at start-up from `[sources.*]`; resolving a source's secrets
//! here means a missing secret stops the gateway before it serves.

use std::collections::HashMap;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderName};
use bytes::Bytes;
use sluice_shared::config::{ConfigError, ExtractorKind, SchemeKind, SourceConfig};

use crate::extract::Extracted;
use crate::extract::json::JsonExtractor;
use crate::signature::{HmacSignature, SignatureError, VerifiedBody};

/// A configured source name (validated by the config: `[a-z0-9_-]{1,64}`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SourceName(String);

impl SourceName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// One provider endpoint, ready to authenticate and extract.
pub struct Source {
    pub name: SourceName,
    scheme: HmacSignature,
    extractor: JsonExtractor,
    /// How long an accepted event id is remembered.
    pub dedup_ttl: Duration,
}

impl Source {
    pub fn from_config(name: &str, config: &SourceConfig) -> Result<Self, ConfigError> {
        let secrets = config
            .secrets
            .iter()
            .enumerate()
            .map(|(i, r)| {
                r.resolve().map_err(|e| {
                    ConfigError::invalid(format!("sources.{name}.secrets[{i}]"), e.to_string())
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let header = HeaderName::try_from(config.header.as_str()).map_err(|_| {
            ConfigError::invalid(format!("sources.{name}.header"), "not a valid header name")
        })?;
        let scheme = match config.scheme {
            SchemeKind::HmacSha256 => {
                HmacSignature::new(header, config.prefix.clone(), config.encoding, &secrets)
            }
        };
        let extractor = match config.extractor {
            ExtractorKind::Json => JsonExtractor {
                id_pointer: config.id_pointer.clone(),
                type_pointer: config.type_pointer.clone(),
            },
        };
        Ok(Self {
            name: SourceName(name.to_owned()),
            scheme,
            extractor,
            dedup_ttl: config.dedup_ttl,
        })
    }

    pub fn authenticate(
        &self,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Result<VerifiedBody, SignatureError> {
        self.scheme.verify(headers, body)
    }

    pub fn extract(&self, body: &VerifiedBody) -> Extracted {
        self.extractor.extract(body)
    }
}

/// All configured sources by name.
#[derive(Default)]
pub struct Sources(HashMap<String, Source>);

impl Sources {
    pub fn from_config<'a>(
        configs: impl IntoIterator<Item = (&'a String, &'a SourceConfig)>,
    ) -> Result<Self, ConfigError> {
        configs
            .into_iter()
            .map(|(name, config)| Ok((name.clone(), Source::from_config(name, config)?)))
            .collect::<Result<HashMap<_, _>, _>>()
            .map(Self)
    }

    pub fn get(&self, name: &str) -> Option<&Source> {
        self.0.get(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }
}
