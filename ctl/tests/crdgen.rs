//! The CRDs in manifests/ are what `tortie-crdgen` makes from the Rust types today.

use std::path::Path;
use std::process::Command;

fn crdgen(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tortie-crdgen"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn the_committed_crds_are_up_to_date() {
    let manifests = Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests");
    let out = crdgen(&["--check", manifests.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // One CRD per kind plus the internal one, and the same ones inside tortie.yaml.
    let files = std::fs::read_dir(manifests.join("crds")).unwrap().count();
    assert_eq!(files, tortie_api::Kind::ALL.len() + 1);
    let all = std::fs::read_to_string(manifests.join("tortie.yaml")).unwrap();
    for kind in tortie_api::Kind::ALL {
        assert!(
            all.contains(&format!("name: {}.tortie.io", kind.plural())),
            "{kind} missing from tortie.yaml"
        );
    }
}

#[test]
fn a_stale_crd_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let out = crdgen(&[dir.path().to_str().unwrap()]);
    assert!(out.status.success());
    let pools = dir.path().join("crds/ippools.tortie.io.yaml");
    let text = std::fs::read_to_string(&pools).unwrap();
    std::fs::write(&pools, text.replace("shortNames:", "shortNamez:")).unwrap();
    let out = crdgen(&["--check", dir.path().to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("ippools.tortie.io.yaml"));
}
