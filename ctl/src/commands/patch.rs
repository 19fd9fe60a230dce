//! `patch KIND NAME -p JSON`: a JSON merge patch (RFC 7386) on the stored object, decoded again
//! (unknown fields are rejected by name) and written as a compare-and-swap on the version read.

use serde_json::{Map, Value};
use tortie_api::AnyResource;
use tortie_datastore::{Change, Outcome};

use crate::cli::PatchArgs;
use crate::output::{object_name, object_ref};
use crate::{CtlError, Ctx};

/// Applies an RFC 7386 merge patch to `target`.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(t) = target {
        for (key, value) in patch {
            if value.is_null() {
                t.remove(key);
            } else {
                merge_patch(t.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

/// The fields a patch may not change, with the value they must keep.
fn identity(v: &Value) -> [(&'static str, Option<&Value>); 3] {
    [
        ("apiVersion", v.get("apiVersion")),
        ("kind", v.get("kind")),
        (
            "metadata.name",
            v.get("metadata").and_then(|m| m.get("name")),
        ),
    ]
}

/// Runs `patch`.
pub async fn run(ctx: &mut Ctx<'_>, args: &PatchArgs) -> Result<(), CtlError> {
    super::refuse_internal(args.kind)?;
    let patch: Value = serde_json::from_str(&args.patch)
        .map_err(|e| CtlError::failure(format!("the patch is not valid JSON: {e}")))?;
    if !patch.is_object() {
        return Err(CtlError::failure(
            "the patch must be a JSON object, e.g. '{\"spec\":{\"natOutgoing\":true}}'",
        ));
    }
    let what = object_ref(args.kind, &args.name);
    let named = object_name(args.kind, &args.name);
    let ds = ctx.existing_datastore().await?;
    let current = super::get_existing(&ds, args.kind, &args.name).await?;
    let before = current.to_json();
    let mut merged = before.clone();
    merge_patch(&mut merged, &patch);
    for ((field, old), (_, new)) in identity(&before).into_iter().zip(identity(&merged)) {
        if old != new {
            return Err(CtlError::failure(format!(
                "{named}: {field} may not be changed by a patch"
            )));
        }
    }
    let mut updated =
        AnyResource::from_json(merged).map_err(|e| CtlError::failure(format!("{named}: {e}")))?;
    // Always a compare-and-swap: on the version read unless the patch names its own.
    if updated.meta().resource_version.is_none() {
        updated.meta_mut().resource_version = current.meta().resource_version.clone();
    }
    match ds.write_all(vec![Change::Replace(updated)]).await {
        Ok(outcomes) => match outcomes.first() {
            Some(Outcome::Unchanged(_)) => ctx.out(format!("{what} patched (no change)")),
            _ => ctx.out(format!("{what} patched")),
        },
        Err(e) => Err(super::single_write_error(&e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rfc7386_examples() {
        // The examples of RFC 7386 appendix A.
        let cases = [
            (json!({"a":"b"}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"b"}), json!({"b":"c"}), json!({"a":"b","b":"c"})),
            (json!({"a":"b"}), json!({"a":null}), json!({})),
            (
                json!({"a":"b","b":"c"}),
                json!({"a":null}),
                json!({"b":"c"}),
            ),
            (json!({"a":["b"]}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"c"}), json!({"a":["b"]}), json!({"a":["b"]})),
            (
                json!({"a":{"b":"c"}}),
                json!({"a":{"b":"d","c":null}}),
                json!({"a":{"b":"d"}}),
            ),
            (json!({"a":[{"b":"c"}]}), json!({"a":[1]}), json!({"a":[1]})),
            (json!(["a", "b"]), json!(["c", "d"]), json!(["c", "d"])),
            (json!({"a":"b"}), json!(["c"]), json!(["c"])),
            (json!({"a":"foo"}), json!(null), json!(null)),
            (json!({"a":"foo"}), json!("bar"), json!("bar")),
            (json!({"e":null}), json!({"a":1}), json!({"e":null,"a":1})),
            (json!([1, 2]), json!({"a":"b","c":null}), json!({"a":"b"})),
            (
                json!({}),
                json!({"a":{"bb":{"ccc":null}}}),
                json!({"a":{"bb":{}}}),
            ),
        ];
        for (mut target, patch, want) in cases {
            merge_patch(&mut target, &patch);
            assert_eq!(target, want, "patch {patch}");
        }
    }
}
