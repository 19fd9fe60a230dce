//! `tortie-crdgen [DIR]`: writes the CustomResourceDefinition of every `tortie.io/v1` kind,
//! generated from the Rust types, into `DIR/crds/` (default `manifests/`), and the same CRDs
//! into the generated region of `DIR/tortie.yaml` when that file has one. `--check` writes
//! nothing and fails when a file differs (CI runs it through a test).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use tortie_datastore::kubernetes::crd_files;

const BEGIN: &str = "# BEGIN GENERATED CRDS (tortie-crdgen)";
const END: &str = "# END GENERATED CRDS";

/// `tortie.yaml` with its generated region replaced by `crds` (None when it has no region).
fn with_crds(manifest: &str, crds: &[(String, String)]) -> Option<String> {
    let start = manifest.find(BEGIN)? + BEGIN.len();
    let end = manifest[start..].find(END)? + start;
    let mut region = String::from("\n");
    for (_, yaml) in crds {
        region.push_str("---\n");
        region.push_str(yaml.trim_end());
        region.push('\n');
    }
    region.push_str("---\n");
    Some(format!(
        "{}{}{}",
        &manifest[..start],
        region,
        &manifest[end..]
    ))
}

fn main() -> ExitCode {
    let mut check = false;
    let mut dir = PathBuf::from("manifests");
    for a in std::env::args().skip(1) {
        match a.as_str() {
            "--check" => check = true,
            "-h" | "--help" => {
                println!("usage: tortie-crdgen [--check] [DIR (default manifests)]");
                return ExitCode::SUCCESS;
            }
            other => dir = PathBuf::from(other),
        }
    }
    let crds = crd_files();
    let mut wanted: Vec<(PathBuf, String)> = crds
        .iter()
        .map(|(name, yaml)| (dir.join("crds").join(name), yaml.clone()))
        .collect();
    let manifest = dir.join("tortie.yaml");
    if let Ok(text) = std::fs::read_to_string(&manifest)
        && let Some(updated) = with_crds(&text, &crds)
    {
        wanted.push((manifest, updated));
    }
    let mut stale = Vec::new();
    for (path, content) in &wanted {
        if std::fs::read_to_string(path).ok().as_deref() == Some(content.as_str()) {
            continue;
        }
        if check {
            stale.push(path.display().to_string());
            continue;
        }
        if let Err(e) = write(path, content) {
            eprintln!("error: {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
        println!("wrote {}", path.display());
    }
    if !stale.is_empty() {
        eprintln!(
            "error: out of date (run `cargo run -p tortie-ctl --bin tortie-crdgen`): {}",
            stale.join(", ")
        );
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

fn write(path: &Path, content: &str) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, content)
}
