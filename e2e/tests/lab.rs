//! The README's first command in miniature: `tortie-lab up` gives 3 nodes × 3 pods with an
//! all-green matrix and the ToR holding each node's block (next hop: its owner); `down` leaves
//! the machine's namespaces, links and routes exactly as before.

use std::process::Command;

use tortie_e2e::testkit::{must, workspace_bin};

/// What `down` must restore: the root namespace's links and routes, and lab namespaces (other
/// tests' namespaces come and go meanwhile, so only ours are compared).
fn snapshot() -> String {
    let netns: Vec<String> = must("ip netns list")
        .lines()
        .filter(|l| l.starts_with("tl-"))
        .map(str::to_string)
        .collect();
    format!(
        "{}\n{}\n{}\n{netns:?}",
        must("ip -o link show | sed 's/ state [A-Z]*.*//'"),
        must("ip route show table all"),
        must("ip -6 route show table all"),
    )
}

#[test]
fn lab_up_is_all_green_and_down_restores_the_machine() {
    let dir = tempfile::Builder::new()
        .prefix("tortie-lab-test-")
        .tempdir()
        .unwrap();
    let lab_dir = dir.path().join("lab");
    let before = snapshot();
    let lab = |args: &[&str]| {
        Command::new(workspace_bin("tortie-lab"))
            .arg("--dir")
            .arg(&lab_dir)
            .args(args)
            .output()
            .unwrap()
    };
    let up = lab(&["up", "--nodes", "3", "--pods-per-node", "3"]);
    let out = String::from_utf8_lossy(&up.stdout).to_string();
    let result = std::panic::catch_unwind(|| {
        assert!(
            up.status.success(),
            "{out}\n{}",
            String::from_utf8_lossy(&up.stderr)
        );
        assert!(out.contains("81 of 81 connections ok"), "{out}");
        // The ToR holds each node's block, via that node.
        let tor: Vec<&str> = out
            .lines()
            .skip_while(|l| !l.contains("ToR routes"))
            .skip(1)
            .take_while(|l| l.starts_with("  10.244."))
            .collect();
        assert_eq!(tor.len(), 3, "{out}");
        for i in 1..=3 {
            assert!(
                tor.iter()
                    .any(|l| l.ends_with(&format!("via 198.18.0.{i}"))),
                "{out}"
            );
        }
        // A second look: `check` re-runs the matrix.
        assert!(lab(&["check"]).status.success());
    });
    let down = lab(&["down"]);
    assert!(down.status.success());
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
    assert_eq!(before, snapshot(), "the machine is not as it was");
    assert!(!lab_dir.exists());
}
