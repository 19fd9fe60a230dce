//! Reading resource files: `-f FILE|DIR|-`, multi-document YAML or JSON, and decoding with
//! errors that name the file, the document and the field.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::Value;
use tortie_api::documents::parse_documents;
use tortie_api::{AnyResource, Kind};

use crate::CtlError;

/// The text of one input file.
#[derive(Debug, Clone)]
pub struct Source {
    /// How the file is named in messages (`examples/ippool.yaml`, `<stdin>`).
    pub name: String,
    /// Its content.
    pub text: String,
}

/// Name used for standard input in messages.
pub const STDIN_NAME: &str = "<stdin>";

fn is_resource_file(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "yaml" | "yml" | "json"))
}

/// Reads every `-f` argument up front (so that a missing file fails before anything is
/// written): a file, a directory's `*.yaml`/`*.yml`/`*.json` files in name order, or `-`.
pub fn read_sources(paths: &[PathBuf], stdin: &mut dyn Read) -> Result<Vec<Source>, CtlError> {
    let mut out = Vec::new();
    let mut stdin_used = false;
    for path in paths {
        if path.as_os_str() == "-" {
            if stdin_used {
                return Err(CtlError::usage(
                    "`-f -` (standard input) may be given only once",
                ));
            }
            stdin_used = true;
            let mut text = String::new();
            stdin
                .read_to_string(&mut text)
                .map_err(|e| CtlError::failure(format!("{STDIN_NAME}: {e}")))?;
            out.push(Source {
                name: STDIN_NAME.to_string(),
                text,
            });
            continue;
        }
        let shown = path.display().to_string();
        let meta =
            std::fs::metadata(path).map_err(|e| CtlError::failure(format!("{shown}: {e}")))?;
        if meta.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|e| CtlError::failure(format!("{shown}: {e}")))?
                .filter_map(|entry| entry.ok().map(|e| e.path()))
                .filter(|p| p.is_file() && is_resource_file(p))
                .collect();
            files.sort();
            if files.is_empty() {
                return Err(CtlError::failure(format!(
                    "{shown}: no *.yaml, *.yml or *.json files in this directory"
                )));
            }
            for file in files {
                out.push(read_file(&file)?);
            }
        } else {
            out.push(read_file(path)?);
        }
    }
    Ok(out)
}

fn read_file(path: &Path) -> Result<Source, CtlError> {
    let name = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| CtlError::failure(format!("{name}: {e}")))?;
    let text = String::from_utf8(bytes)
        .map_err(|_| CtlError::failure(format!("{name}: not UTF-8 text")))?;
    Ok(Source { name, text })
}

/// One document of a file, before decoding.
#[derive(Debug, Clone)]
pub struct Document {
    /// Where it is: `document 2`, or `document 1 item 3` inside a `List`.
    pub label: String,
    /// The raw value.
    pub value: Value,
}

impl Document {
    /// ` (IPPool "p2")` when the raw document says its kind and name, else empty.
    pub fn ident(&self) -> String {
        let kind = self.value.get("kind").and_then(Value::as_str);
        let name = self
            .value
            .get("metadata")
            .and_then(|m| m.get("name"))
            .and_then(Value::as_str);
        match (kind, name) {
            (Some(k), Some(n)) => format!(" ({k} {n:?})"),
            (Some(k), None) => format!(" ({k})"),
            _ => String::new(),
        }
    }
}

/// Splits a file into documents. A `List` document (as printed by `get -o json`) contributes
/// its items.
pub fn split_documents(text: &str) -> Result<Vec<Document>, String> {
    let values = parse_documents(text).map_err(|e| e.error.to_string())?;
    let mut docs = Vec::new();
    for (i, value) in values.into_iter().enumerate() {
        let n = i + 1;
        let is_list = value.get("kind").and_then(Value::as_str) == Some("List");
        match value {
            Value::Object(mut map) if is_list => {
                let Some(Value::Array(items)) = map.remove("items") else {
                    return Err(format!("document {n}: a List needs an `items` array"));
                };
                for (j, item) in items.into_iter().enumerate() {
                    docs.push(Document {
                        label: format!("document {n} item {}", j + 1),
                        value: item,
                    });
                }
            }
            value => docs.push(Document {
                label: format!("document {n}"),
                value,
            }),
        }
    }
    Ok(docs)
}

/// A decoded document.
#[derive(Debug, Clone)]
pub struct Decoded {
    /// Where it came from.
    pub doc: Document,
    /// The resource.
    pub resource: AnyResource,
}

impl Decoded {
    /// ` (IPPool "p2")`.
    pub fn ident(&self) -> String {
        ident(&self.resource)
    }
}

/// ` (IPPool "p2")` for a decoded resource.
pub fn ident(r: &AnyResource) -> String {
    format!(" ({} {:?})", r.kind(), r.meta().name)
}

/// What [`decode_source`] checks beyond decoding.
#[derive(Debug, Clone, Copy)]
pub struct Checks {
    /// Run each kind's validation (after defaults), as the datastore will.
    pub validate: bool,
    /// Refuse kinds that IPAM manages.
    pub refuse_internal: bool,
}

/// The message for a write to a kind that IPAM owns.
pub fn internal_kind_message(kind: Kind) -> String {
    format!(
        "{kind} is managed by tortie's IPAM and cannot be created, changed or deleted with tortiectl \
         (it can be read with `tortiectl get {}`)",
        kind.name().to_ascii_lowercase()
    )
}

/// The documents of a file that decoded and passed the checks, and a message for each that
/// did not (naming the file, the document and the field).
#[derive(Debug, Clone, Default)]
pub struct DecodedFile {
    /// The good documents.
    pub good: Vec<Decoded>,
    /// One message per problem.
    pub errors: Vec<String>,
}

impl DecodedFile {
    /// All documents, or the problems when there is any.
    pub fn into_result(self) -> Result<Vec<Decoded>, Vec<String>> {
        if self.errors.is_empty() {
            Ok(self.good)
        } else {
            Err(self.errors)
        }
    }
}

/// Decodes every document of a file. Returns the resources, or every problem found.
pub fn decode_source(source: &Source, checks: Checks) -> Result<Vec<Decoded>, Vec<String>> {
    decode_source_partially(source, checks).into_result()
}

/// Decodes every document of a file, keeping the good ones even when others are bad.
pub fn decode_source_partially(source: &Source, checks: Checks) -> DecodedFile {
    let docs = match split_documents(&source.text) {
        Ok(docs) => docs,
        Err(e) => {
            return DecodedFile {
                good: Vec::new(),
                errors: vec![format!("{}: {e}", source.name)],
            };
        }
    };
    if docs.is_empty() {
        return DecodedFile {
            good: Vec::new(),
            errors: vec![format!("{}: no resources found in this file", source.name)],
        };
    }
    let mut errors = Vec::new();
    let mut decoded = Vec::with_capacity(docs.len());
    let mut seen: HashMap<(Kind, String), String> = HashMap::new();
    for doc in docs {
        let at = format!("{}: {}{}", source.name, doc.label, doc.ident());
        let resource = match AnyResource::from_json(doc.value.clone()) {
            Ok(r) => r,
            Err(e) => {
                errors.push(format!("{at}: {e}"));
                continue;
            }
        };
        if checks.refuse_internal && resource.kind().is_internal() {
            errors.push(format!("{at}: {}", internal_kind_message(resource.kind())));
            continue;
        }
        if checks.validate {
            let mut defaulted = resource.clone();
            defaulted.apply_defaults();
            if let Err(e) = defaulted.validate() {
                errors.push(format!("{at}: {e}"));
                continue;
            }
        }
        let key = (resource.kind(), resource.meta().name.clone());
        if let Some(first) = seen.get(&key) {
            errors.push(format!(
                "{at}: {} {:?} appears twice in this file (also {first})",
                key.0, key.1
            ));
            continue;
        }
        seen.insert(key, doc.label.clone());
        decoded.push(Decoded { doc, resource });
    }
    DecodedFile {
        good: decoded,
        errors,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(text: &str) -> Source {
        Source {
            name: "f.yaml".into(),
            text: text.into(),
        }
    }

    const CHECK_ALL: Checks = Checks {
        validate: true,
        refuse_internal: true,
    };

    #[test]
    fn names_file_document_and_field() {
        let text = "apiVersion: tortie.io/v1\nkind: IPPool\nmetadata: {name: p1}\nspec: {cidr: 10.1.0.0/16}\n---\n\
                    apiVersion: tortie.io/v1\nkind: IPPool\nmetadata: {name: p2}\nspec: {cidr: 10.0.0.0/33}\n";
        let errs = decode_source(&src(text), CHECK_ALL).unwrap_err();
        assert_eq!(
            errs,
            vec![
                r#"f.yaml: document 2 (IPPool "p2"): spec.cidr: "10.0.0.0/33" is not a valid CIDR"#
            ]
        );
    }

    #[test]
    fn lists_expand_and_duplicates_are_named() {
        let text = r#"{"apiVersion":"tortie.io/v1","kind":"List","items":[
            {"apiVersion":"tortie.io/v1","kind":"IPPool","metadata":{"name":"a"},"spec":{"cidr":"10.1.0.0/16"}},
            {"apiVersion":"tortie.io/v1","kind":"IPPool","metadata":{"name":"a"},"spec":{"cidr":"10.2.0.0/16"}}]}"#;
        let errs = decode_source(&src(text), CHECK_ALL).unwrap_err();
        assert_eq!(errs.len(), 1);
        assert!(
            errs[0].starts_with(r#"f.yaml: document 1 item 2 (IPPool "a"): "#),
            "{errs:?}"
        );
        assert!(errs[0].contains("also document 1 item 1"), "{errs:?}");
    }

    #[test]
    fn internal_kinds_are_refused_and_empty_files_too() {
        let text = "apiVersion: tortie.io/v1\nkind: IPAMHandle\nmetadata: {name: h}\nspec: {handleID: h}\n";
        let errs = decode_source(&src(text), CHECK_ALL).unwrap_err();
        assert!(errs[0].contains("managed by tortie's IPAM"), "{errs:?}");
        let errs = decode_source(&src("---\n"), CHECK_ALL).unwrap_err();
        assert!(errs[0].contains("no resources"), "{errs:?}");
        let errs = decode_source(&src("a: [\n"), CHECK_ALL).unwrap_err();
        assert!(errs[0].starts_with("f.yaml: invalid YAML"), "{errs:?}");
    }
}
