//! Object metadata in the Kubernetes shape, and the generic [`Object`] envelope.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::FieldErrors;

/// `metadata` of every resource. Server-owned fields (`resourceVersion`, `uid`,
/// `creationTimestamp`) are filled by the datastore; a client may send `resourceVersion` to ask
/// for a compare-and-swap.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObjectMeta {
    /// Unique within the kind; a DNS-1123 subdomain.
    #[serde(default)]
    pub name: String,
    /// Labels matched by selectors.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Free-form annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Opaque version for compare-and-swap; a string so that the Kubernetes backend fits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
    /// Set once at creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// Set once at creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_timestamp: Option<DateTime<Utc>>,
}

impl ObjectMeta {
    /// Metadata with just a name.
    pub fn named(name: impl Into<String>) -> Self {
        ObjectMeta {
            name: name.into(),
            ..Default::default()
        }
    }

    /// Checks the name (DNS-1123 subdomain) and label keys/values (Kubernetes rules).
    pub fn validate(&self, errs: &mut FieldErrors) {
        if let Err(why) = check_dns1123_subdomain(&self.name) {
            errs.push("metadata.name", format!("{:?} {why}", self.name));
        }
        for (k, v) in &self.labels {
            if let Err(why) = check_label_key(k) {
                errs.push(format!("metadata.labels.{k}"), format!("key {k:?} {why}"));
            }
            if let Err(why) = check_label_value(v) {
                errs.push(format!("metadata.labels.{k}"), format!("{v:?} {why}"));
            }
        }
    }

    /// The user-controlled part (name, labels, annotations), for "did anything change?" checks.
    pub fn same_user_fields(&self, other: &ObjectMeta) -> bool {
        self.name == other.name
            && self.labels == other.labels
            && self.annotations == other.annotations
    }
}

/// A resource: `apiVersion`, `kind`, `metadata`, `spec`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Object<S> {
    /// Always [`crate::API_VERSION`].
    pub api_version: String,
    /// The kind's name, e.g. `IPPool`.
    pub kind: String,
    /// Name, labels, versions.
    pub metadata: ObjectMeta,
    /// The kind-specific body.
    pub spec: S,
}

fn check_dns1123_subdomain(s: &str) -> Result<(), &'static str> {
    if s.is_empty() {
        return Err("is empty; a name is required");
    }
    if s.len() > 253 {
        return Err("is longer than 253 characters");
    }
    for label in s.split('.') {
        let ok = !label.is_empty()
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Err(
                "is not a valid name (lower-case letters, digits, '-' and '.', starting and ending with a letter or digit)",
            );
        }
    }
    Ok(())
}

fn is_label_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.as_bytes()[s.len() - 1].is_ascii_alphanumeric()
}

fn check_label_key(k: &str) -> Result<(), &'static str> {
    let (prefix, name) = match k.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    if let Some(p) = prefix {
        check_dns1123_subdomain(p)
            .map_err(|_| "has an invalid prefix (must be a DNS subdomain)")?;
    }
    if is_label_name(name) {
        Ok(())
    } else {
        Err("is not a valid label key")
    }
}

fn check_label_value(v: &str) -> Result<(), &'static str> {
    if v.is_empty() || is_label_name(v) {
        Ok(())
    } else {
        Err("is not a valid label value (at most 63 of [A-Za-z0-9-_.], alphanumeric at both ends)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_dns1123() {
        for ok in ["default", "pool-1", "node.worker-1", "10-65-79-0-26"] {
            assert!(check_dns1123_subdomain(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Pool", "-a", "a-", "a..b", "a_b", &"x".repeat(254)] {
            assert!(check_dns1123_subdomain(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn labels_follow_kubernetes_rules() {
        let mut m = ObjectMeta::named("n");
        m.labels
            .insert("kubernetes.io/hostname".into(), "w-1".into());
        m.labels.insert("rack".into(), "".into());
        let mut errs = FieldErrors::default();
        m.validate(&mut errs);
        assert!(errs.is_empty(), "{errs:?}");
        m.labels.insert("bad key!".into(), "x".into());
        m.labels.insert("ok".into(), "-bad".into());
        m.validate(&mut errs);
        assert_eq!(errs.0.len(), 2, "{errs:?}");
    }
}
