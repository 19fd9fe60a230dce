//! The kinds, the [`Spec`] trait every kind's body implements, and [`AnyResource`] for code that
//! handles resources of any kind (the CLI, the datastore's shared write checks).

use std::fmt;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{FieldErrors, ValidationError};
use crate::kinds::*;
use crate::meta::{Object, ObjectMeta};

/// Behaviour of one kind's `spec`.
pub trait Spec:
    Serialize + DeserializeOwned + Clone + PartialEq + fmt::Debug + Send + Sync + KindBinding + 'static
{
    /// The kind this is the body of.
    const KIND: Kind;

    /// Fills in defaults. Applied on every write and every read, so stored objects written by
    /// an older version still come back complete.
    fn apply_defaults(&mut self, _meta: &ObjectMeta) {}

    /// Cross-field checks that decoding cannot express.
    fn validate(&self, _meta: &ObjectMeta, _errs: &mut FieldErrors) {}

    /// Checks for a change from `old` (immutable fields).
    fn validate_update(&self, _old: &Self, _errs: &mut FieldErrors) {}
}

/// Conversion between a typed object and [`AnyResource`]; implemented for every kind below.
pub trait KindBinding: Sized {
    /// Wraps a typed object.
    fn wrap(obj: Object<Self>) -> AnyResource;
    /// Unwraps; `None` when the resource is of another kind.
    fn unwrap(any: AnyResource) -> Option<Object<Self>>;
}

impl<S: Spec> Object<S> {
    /// A new object with the given name and spec.
    pub fn new(name: impl Into<String>, spec: S) -> Self {
        Object {
            api_version: crate::API_VERSION.to_string(),
            kind: S::KIND.name().to_string(),
            metadata: ObjectMeta::named(name),
            spec,
        }
    }

    /// Fills in defaults (see [`Spec::apply_defaults`]).
    pub fn apply_defaults(&mut self) {
        self.spec.apply_defaults(&self.metadata);
    }

    /// Full validation of one object on its own.
    pub fn validate(&self) -> Result<(), ValidationError> {
        let mut errs = FieldErrors::default();
        if self.api_version != crate::API_VERSION {
            errs.push(
                "apiVersion",
                format!(
                    "{:?} is not supported (use {:?})",
                    self.api_version,
                    crate::API_VERSION
                ),
            );
        }
        if self.kind != S::KIND.name() {
            errs.push(
                "kind",
                format!("{:?} does not match {}", self.kind, S::KIND.name()),
            );
        }
        self.metadata.validate(&mut errs);
        self.spec.validate(&self.metadata, &mut errs);
        errs.into_result()
    }

    /// Checks a change from `old` (immutable fields).
    pub fn validate_update(&self, old: &Object<S>) -> Result<(), ValidationError> {
        let mut errs = FieldErrors::default();
        self.spec.validate_update(&old.spec, &mut errs);
        errs.into_result()
    }
}

macro_rules! kinds {
    ($( $kind:ident => $spec:ty, $plural:literal, [$($alias:literal),*], internal: $internal:literal; )*) => {
        /// Every kind in `tortie.io/v1`.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[allow(clippy::upper_case_acronyms)]
        pub enum Kind {
            $(
                #[doc = concat!("`", stringify!($kind), "`")]
                $kind,
            )*
        }

        impl Kind {
            /// All kinds.
            pub const ALL: &'static [Kind] = &[$(Kind::$kind),*];

            /// The kind's name as written in documents, e.g. `IPPool`.
            pub fn name(self) -> &'static str {
                match self { $(Kind::$kind => stringify!($kind)),* }
            }

            /// Lower-case plural, used in storage keys and URLs, e.g. `ippools`.
            pub fn plural(self) -> &'static str {
                match self { $(Kind::$kind => $plural),* }
            }

            /// Names the CLI accepts besides the plural (singular, short names).
            pub fn aliases(self) -> &'static [&'static str] {
                match self { $(Kind::$kind => &[$($alias),*]),* }
            }

            /// Managed by IPAM, not by users.
            pub fn is_internal(self) -> bool {
                match self { $(Kind::$kind => $internal),* }
            }

            /// The JSON schema of the kind's `spec`, made by a generator with `settings` (the
            /// Kubernetes backend's CRDs use this with kube's structural-schema transforms).
            pub fn spec_schema(self, settings: schemars::generate::SchemaSettings) -> schemars::Schema {
                match self { $(Kind::$kind => settings.into_generator().into_root_schema_for::<$spec>()),* }
            }

            /// Finds a kind by name, plural or alias, ignoring case.
            pub fn lookup(text: &str) -> Option<Kind> {
                let t = text.to_ascii_lowercase();
                Kind::ALL.iter().copied().find(|k| {
                    k.name().eq_ignore_ascii_case(&t) || k.plural() == t || k.aliases().contains(&t.as_str())
                })
            }
        }

        /// A resource of any kind.
        #[derive(Debug, Clone, PartialEq)]
        #[allow(clippy::large_enum_variant)]
        pub enum AnyResource {
            $(
                #[doc = concat!("`", stringify!($kind), "`")]
                $kind(Object<$spec>),
            )*
        }

        $(
            impl KindBinding for $spec {
                fn wrap(obj: Object<Self>) -> AnyResource { AnyResource::$kind(obj) }
                fn unwrap(any: AnyResource) -> Option<Object<Self>> {
                    match any { AnyResource::$kind(o) => Some(o), _ => None }
                }
            }
        )*

        impl AnyResource {
            /// The kind.
            pub fn kind(&self) -> Kind {
                match self { $(AnyResource::$kind(_) => Kind::$kind),* }
            }
            /// The metadata.
            pub fn meta(&self) -> &ObjectMeta {
                match self { $(AnyResource::$kind(o) => &o.metadata),* }
            }
            /// The metadata, for changes.
            pub fn meta_mut(&mut self) -> &mut ObjectMeta {
                match self { $(AnyResource::$kind(o) => &mut o.metadata),* }
            }
            /// Fills in defaults.
            pub fn apply_defaults(&mut self) {
                match self { $(AnyResource::$kind(o) => o.apply_defaults()),* }
            }
            /// Validates the object on its own.
            pub fn validate(&self) -> Result<(), ValidationError> {
                match self { $(AnyResource::$kind(o) => o.validate()),* }
            }
            /// Validates a change from `old`, which must be of the same kind.
            pub fn validate_update(&self, old: &AnyResource) -> Result<(), ValidationError> {
                match (self, old) {
                    $((AnyResource::$kind(new), AnyResource::$kind(old)) => new.validate_update(old),)*
                    _ => Err(ValidationError::single("kind", "may not change")),
                }
            }
            /// True when spec, name, labels and annotations are equal (server fields ignored).
            pub fn same_content(&self, other: &AnyResource) -> bool {
                match (self, other) {
                    $((AnyResource::$kind(a), AnyResource::$kind(b)) => {
                        a.spec == b.spec && a.metadata.same_user_fields(&b.metadata)
                    })*
                    _ => false,
                }
            }
            /// The JSON form.
            pub fn to_json(&self) -> serde_json::Value {
                match self {
                    $(AnyResource::$kind(o) => serde_json::to_value(o).expect("resources serialize")),*
                }
            }
            /// Decodes a resource of the given kind; errors name the field.
            pub fn from_json_as(kind: Kind, value: serde_json::Value) -> Result<AnyResource, ValidationError> {
                match kind {
                    $(Kind::$kind => decode_with_path::<$spec>(value).map(AnyResource::$kind)),*
                }
            }
        }
    };
}

kinds! {
    IPPool => IPPoolSpec, "ippools", ["ippool", "ipp", "pool", "pools"], internal: false;
    BGPConfiguration => BGPConfigurationSpec, "bgpconfigurations", ["bgpconfiguration", "bgpconfig", "bgpconfigs"], internal: false;
    BGPPeer => BGPPeerSpec, "bgppeers", ["bgppeer"], internal: false;
    BGPFilter => BGPFilterSpec, "bgpfilters", ["bgpfilter"], internal: false;
    Node => NodeSpec, "nodes", ["node", "no"], internal: false;
    IPAMConfiguration => IPAMConfigurationSpec, "ipamconfigurations", ["ipamconfiguration", "ipamconfig", "ipamconfigs"], internal: false;
    IPReservation => IPReservationSpec, "ipreservations", ["ipreservation", "ipres"], internal: false;
    IPAMBlock => IPAMBlockSpec, "ipamblocks", ["ipamblock"], internal: true;
    BlockAffinity => BlockAffinitySpec, "blockaffinities", ["blockaffinity"], internal: true;
    IPAMHandle => IPAMHandleSpec, "ipamhandles", ["ipamhandle"], internal: true;
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl AnyResource {
    /// Decodes a document of any kind: reads `apiVersion` and `kind` first, then the body, with
    /// errors that name the field (`spec.cidr: "10.0.0.0/33" is not a valid CIDR`).
    pub fn from_json(value: serde_json::Value) -> Result<AnyResource, ValidationError> {
        let obj = value
            .as_object()
            .ok_or_else(|| ValidationError::single("", "a resource must be a mapping"))?;
        let kind_text = match obj.get("kind") {
            Some(serde_json::Value::String(k)) => k.clone(),
            Some(other) => {
                return Err(ValidationError::single(
                    "kind",
                    format!("{other} is not a kind name"),
                ));
            }
            None => return Err(ValidationError::single("kind", "is missing")),
        };
        let kind = Kind::ALL
            .iter()
            .copied()
            .find(|k| k.name() == kind_text)
            .ok_or_else(|| {
                let known: Vec<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
                ValidationError::single(
                    "kind",
                    format!(
                        "{kind_text:?} is not a known kind (one of {})",
                        known.join(", ")
                    ),
                )
            })?;
        match obj.get("apiVersion") {
            Some(serde_json::Value::String(v)) if v == crate::API_VERSION => {}
            Some(v) => {
                return Err(ValidationError::single(
                    "apiVersion",
                    format!("{v} is not supported (use {:?})", crate::API_VERSION),
                ));
            }
            None => return Err(ValidationError::single("apiVersion", "is missing")),
        }
        AnyResource::from_json_as(kind, value)
    }

    /// Converts to a typed object; `None` if it is of another kind.
    pub fn into_typed<S: Spec>(self) -> Option<Object<S>> {
        S::unwrap(self)
    }
}

impl<S: Spec> From<Object<S>> for AnyResource {
    fn from(o: Object<S>) -> Self {
        S::wrap(o)
    }
}

/// Deserializes with the failing field's path in the message.
fn decode_with_path<S: Spec>(value: serde_json::Value) -> Result<Object<S>, ValidationError> {
    serde_path_to_error::deserialize::<_, Object<S>>(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.inner().to_string();
        // serde says "unknown field `x`, expected one of …" at the parent's path: point at the
        // field itself so the user sees `spec.x: unknown field`.
        if let Some(rest) = inner.strip_prefix("unknown field `")
            && let Some((name, tail)) = rest.split_once('`')
        {
            // serde_path_to_error already ends the path with the unknown key; older versions
            // stop at the parent.
            let full = if path == "." || path.is_empty() {
                name.to_string()
            } else if path == name || path.ends_with(&format!(".{name}")) {
                path.clone()
            } else {
                format!("{path}.{name}")
            };
            let hint = tail.trim_start_matches(", ");
            return ValidationError::single(full, format!("unknown field ({hint})"));
        }
        let path = if path == "." { String::new() } else { path };
        ValidationError::single(path, inner)
    })
}
