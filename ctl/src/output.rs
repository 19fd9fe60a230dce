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
/// `labels[i]` names the i-th change of the batch, to translate the datastore's batch positions.
pub fn object_problem(e: &Error, labels: &[String]) -> String {
    match e.root() {
        Error::Invalid { error, .. } => rewrite_batch_positions(&error.to_string(), labels),
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

/// The datastore speaks of `(document J of this batch)` with J counted from 0; say which
/// document of the file that is instead.
fn rewrite_batch_positions(message: &str, labels: &[String]) -> String {
    const HEAD: &str = "(document ";
    const TAIL: &str = " of this batch)";
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(start) = rest.find(HEAD) {
        let after = &rest[start + HEAD.len()..];
        let digits = after.bytes().take_while(u8::is_ascii_digit).count();
        let label = after[..digits]
            .parse::<usize>()
            .ok()
            .and_then(|j| labels.get(j))
            .filter(|_| after[digits..].starts_with(TAIL));
        match label {
            Some(label) => {
                out.push_str(&rest[..start]);
                out.push_str(&format!("({label} of this file)"));
                rest = &after[digits + TAIL.len()..];
            }
            None => {
                out.push_str(&rest[..start + HEAD.len()]);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_positions_become_file_positions() {
        let labels = vec!["document 1".to_string(), "document 2".to_string()];
        assert_eq!(
            rewrite_batch_positions(
                r#"spec.cidr: "10.0.0.0/17" overlaps IPPool "a" (10.0.0.0/16) (document 0 of this batch)"#,
                &labels
            ),
            r#"spec.cidr: "10.0.0.0/17" overlaps IPPool "a" (10.0.0.0/16) (document 1 of this file)"#
        );
        assert_eq!(
            rewrite_batch_positions("(document 7 of this batch)", &labels),
            "(document 7 of this batch)"
        );
        assert_eq!(
            rewrite_batch_positions("x (document y", &labels),
            "x (document y"
        );
    }

    #[test]
    fn lists_have_the_kubernetes_shape() {
        let v = json_list(&[]);
        assert_eq!(v["kind"], "List");
        assert_eq!(v["apiVersion"], "tortie.io/v1");
        assert_eq!(v["items"], json!([]));
    }
}
