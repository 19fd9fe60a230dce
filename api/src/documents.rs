//! Reading and writing files of resources: multi-document YAML, a JSON object, or a JSON array.

use serde_json::Value;

use crate::error::ValidationError;
use crate::resource::AnyResource;

/// A problem in one document of a file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("document {index}: {error}")]
pub struct DocumentError {
    /// 0-based position of the document in the file.
    pub index: usize,
    /// What is wrong with it.
    pub error: ValidationError,
}

/// Splits text into documents. JSON when it starts with `{` or `[`, YAML otherwise; empty YAML
/// documents (`---` with nothing after it) are skipped.
pub fn parse_documents(text: &str) -> Result<Vec<Value>, DocumentError> {
    let trimmed = text.trim_start();
    let syntax = |index: usize, e: String| DocumentError {
        index,
        error: ValidationError::single("", e),
    };
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        let v: Value =
            serde_json::from_str(text).map_err(|e| syntax(0, format!("invalid JSON: {e}")))?;
        return Ok(match v {
            Value::Array(items) => items,
            other => vec![other],
        });
    }
    // YAML 1.2 core booleans only: with YAML 1.1's `y`/`n`/`on`/`off`, a node named `n`
    // would silently become `false`.
    let options = serde_saphyr::options! { strict_booleans: true };
    let docs: Vec<Value> = serde_saphyr::from_multiple_with_options(text, options)
        .map_err(|e| syntax(0, format!("invalid YAML: {e}")))?;
    Ok(docs.into_iter().filter(|d| !d.is_null()).collect())
}

/// Parses and decodes every document; the first bad document fails the whole file.
pub fn decode_documents(text: &str) -> Result<Vec<AnyResource>, DocumentError> {
    parse_documents(text)?
        .into_iter()
        .enumerate()
        .map(|(index, v)| AnyResource::from_json(v).map_err(|error| DocumentError { index, error }))
        .collect()
}

/// Renders resources as multi-document YAML.
pub fn to_yaml(resources: &[AnyResource]) -> String {
    let mut out = String::new();
    for (i, r) in resources.iter().enumerate() {
        if i > 0 {
            out.push_str("---\n");
        }
        out.push_str(&serde_saphyr::to_string(&r.to_json()).expect("JSON values render as YAML"));
    }
    out
}
