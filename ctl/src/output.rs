//! Rendering objects (YAML, JSON) and results (`ippool/default-ipv4 created`), and wording
//! datastore errors for users.

use serde_json::{Value, json};
use tortie_api::{AnyResource, Kind};
use tortie_datastore::Error;

/// `ippool`: how a kind is written in result lines.
pub fn kind_token(kind: Kind) -> String {
    kind.name().to_ascii_lowercase()
}

/// `ippool/default-ipv4`.
pub fn object_ref(kind: Kind, name: &str) -> String {
    format!("{}/{name}", kind_token(kind))
}

/// `IPPool "default-ipv4"`: how single-object commands name the object in messages.
pub fn object_name(kind: Kind, name: &str) -> String {
    format!("{kind} {name:?}")
}

/// A `List` of objects, as `get -o json` prints several.
pub fn json_list(items: &[AnyResource]) -> Value {
    json!({
        "apiVersion": tortie_api::API_VERSION,
        "kind": "List",
        "items": items.iter().map(AnyResource::to_json).collect::<Vec<_>>(),
    })
}

/// Pretty JSON with a final newline.
pub fn render_json(value: &Value) -> String {
    let mut s = serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string());
    s.push('\n');
    s
}

/// Multi-document YAML.
pub fn render_yaml(items: &[AnyResource]) -> String {
    tortie_api::documents::to_yaml(items)
}

/// What went wrong with one object, worded to follow `file: document N (Kind "name"): `.
pub fn object_problem(e: &Error) -> String {
    match e.root() {
        Error::Invalid { error, .. } => error.to_string(),
        Error::AlreadyExists { .. } => {
            "already exists (use `tortiectl apply` or `tortiectl replace` to change it)".to_string()
        }
        Error::NotFound { .. } => "not found".to_string(),
        Error::Conflict { given, current, .. } => format!(
            "was modified concurrently (resourceVersion {given} is stale, current is {current}); \
             read it again and retry"
        ),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_have_the_kubernetes_shape() {
        let v = json_list(&[]);
        assert_eq!(v["kind"], "List");
        assert_eq!(v["apiVersion"], "tortie.io/v1");
        assert_eq!(v["items"], json!([]));
    }
}
