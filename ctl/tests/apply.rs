//! `apply`/`create`/`replace`: defaults, idempotence, and all-or-nothing files.

mod common;

use common::{Env, doc, docs, on_both_backends};
use serde_json::Value;

/// Every object's (kind, name, resourceVersion) in a `get -o json` list.
fn versions(list: &Value) -> Vec<(String, String, String)> {
    list["items"]
        .as_array()
        .expect("a List has items")
        .iter()
        .map(|o| {
            (
                o["kind"].as_str().unwrap_or_default().to_string(),
                o["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                o["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect()
}

#[test]
fn apply_examples_fills_defaults_and_is_idempotent() {
    on_both_backends(|env| {
        let first = env.ctl(&["apply", "-f", "examples/"]).ok();
        let mut lines: Vec<&str> = first.stdout.lines().collect();
        lines.sort();
        assert_eq!(
            lines,
            vec![
                "bgpconfiguration/default created",
                "bgppeer/rack-1-tor created",
                "bgppeer/tor-global created",
                "ippool/default-ipv4 created",
            ],
            "{first:?}"
        );

        let yaml = env.ctl(&["get", "ippool", "-o", "yaml"]).ok();
        for want in [
            "name: default-ipv4",
            "cidr: 10.244.0.0/16",
            "blockSize: 26",
            "allowedUses:\n  - Workload\n  - Tunnel",
            "nodeSelector: all()",
            "vxlanMode: Never",
            "resourceVersion:",
        ] {
            assert!(
                yaml.stdout.contains(want),
                "[{}] lacks {want:?}:{yaml:?}",
                env.backend
            );
        }

        let kinds = ["ippools", "bgppeers", "bgpconfigurations"];
        let before: Vec<Value> = kinds
            .iter()
            .map(|k| env.ctl(&["get", k, "-o", "json"]).ok().json())
            .collect();
        let dump_before = env.dump();
        let again = env.ctl(&["apply", "-f", "examples/"]).ok();
        assert_eq!(again.stdout.lines().count(), 4, "{again:?}");
        for line in again.stdout.lines() {
            assert!(
                line.ends_with(" unchanged"),
                "[{}] {line:?}:{again:?}",
                env.backend
            );
        }
        let after: Vec<Value> = kinds
            .iter()
            .map(|k| env.ctl(&["get", k, "-o", "json"]).ok().json())
            .collect();
        for (b, a) in before.iter().zip(&after) {
            let vb = versions(b);
            assert!(
                !vb.is_empty() && vb.iter().all(|(_, _, rv)| !rv.is_empty()),
                "{vb:?}"
            );
            assert_eq!(vb, versions(a), "[{}] resource versions moved", env.backend);
            assert_eq!(b, a, "[{}] objects changed", env.backend);
        }
        env.assert_unchanged(&dump_before, "re-applying the examples");

        // A real change is reported as such and moves the version.
        let changed = env.file(
            "pool.yaml",
            &doc(
                "IPPool",
                "default-ipv4",
                "  cidr: 10.244.0.0/16\n  natOutgoing: false\n",
            ),
        );
        env.ctl(&["apply", "-f", &changed])
            .ok()
            .stdout_has("ippool/default-ipv4 configured");
        let now = versions(&env.ctl(&["get", "ippools", "-o", "json"]).ok().json());
        assert_ne!(now, versions(&before[0]), "[{}]", env.backend);
    });
}

/// A new peer that is fine on its own: files below put it first, so that a file rejected
/// later in the batch proves the peer was not written either.
fn fine_peer() -> String {
    doc(
        "BGPPeer",
        "new-peer",
        "  peerIP: 198.18.0.9\n  asNumber: 65009\n",
    )
}

/// Applies `text` (as a file, and again on stdin) to a datastore holding the examples, and
/// checks: exit status 1, every `expect` in stderr, and nothing written.
fn assert_rejected(env: &Env, name: &str, text: &str, expect: &[&str]) {
    let before = env.dump();
    let path = env.file(&format!("{name}.yaml"), text);
    let mut run = env.ctl(&["apply", "-f", &path]).code(1);
    for e in expect {
        run = run.stderr_has(e);
    }
    assert!(
        run.stdout.is_empty(),
        "[{}] {name}: printed results:{run:?}",
        env.backend
    );
    env.assert_unchanged(&before, name);
    let mut run = env.ctl_stdin(&["apply", "-f", "-"], Some(text)).code(1);
    for e in expect {
        run = run.stderr_has(e);
    }
    env.assert_unchanged(&before, name);
    env.ctl(&["get", "bgppeer", "new-peer"])
        .code(1)
        .stderr_has("BGPPeer \"new-peer\" not found");
}

#[test]
fn rejected_files_write_nothing() {
    on_both_backends(|env| {
        env.ctl(&["apply", "-f", "examples/"]).ok();

        // Found by the datastore's batch check (pool overlap), after the peer was planned.
        assert_rejected(
            env,
            "overlap",
            &docs(&[
                fine_peer(),
                doc("IPPool", "overlapping", "  cidr: 10.244.128.0/17\n"),
            ]),
            &[
                "document 2 (IPPool \"overlapping\"): spec.cidr:",
                "overlaps IPPool \"default-ipv4\"",
                "nothing was written",
            ],
        );
        // Two new pools overlapping each other within one file.
        assert_rejected(
            env,
            "overlap-in-file",
            &docs(&[
                fine_peer(),
                doc("IPPool", "a", "  cidr: 10.50.0.0/16\n"),
                doc("IPPool", "b", "  cidr: 10.50.64.0/18\n"),
            ]),
            // The later pool is blamed; the earlier one is named.
            &[
                "document 3 (IPPool \"b\"): spec.cidr: \"10.50.64.0/18\" overlaps IPPool \"a\" (10.50.0.0/16), written in the same batch",
            ],
        );
        assert_rejected(
            env,
            "slash33",
            &docs(&[fine_peer(), doc("IPPool", "p2", "  cidr: 10.0.0.0/33\n")]),
            &["document 2 (IPPool \"p2\"): spec.cidr: \"10.0.0.0/33\" is not a valid CIDR"],
        );
        assert_rejected(
            env,
            "bad-selector",
            &docs(&[
                fine_peer(),
                doc(
                    "IPPool",
                    "p3",
                    "  cidr: 10.60.0.0/16\n  nodeSelector: \"rack == \"\n",
                ),
            ]),
            &[
                "document 2 (IPPool \"p3\"): spec.nodeSelector:",
                "is not a valid selector",
            ],
        );
        assert_rejected(
            env,
            "unknown-field",
            &docs(&[
                fine_peer(),
                doc("IPPool", "p4", "  cidr: 10.70.0.0/16\n  foo: bar\n"),
            ]),
            &["document 2 (IPPool \"p4\"): spec.foo: unknown field"],
        );
        // Found by the datastore against the stored object (immutable field).
        assert_rejected(
            env,
            "block-size",
            &docs(&[
                fine_peer(),
                doc(
                    "IPPool",
                    "default-ipv4",
                    "  cidr: 10.244.0.0/16\n  blockSize: 24\n",
                ),
            ]),
            &["document 2 (IPPool \"default-ipv4\"): spec.blockSize: 24 may not change (was 26)"],
        );
        assert_rejected(
            env,
            "internal-kind",
            &docs(&[fine_peer(), doc("IPAMHandle", "h1", "  handleID: h1\n")]),
            &["document 2 (IPAMHandle \"h1\"): IPAMHandle is managed by tortie's IPAM"],
        );
        assert_rejected(
            env,
            "not-yaml",
            &format!("{}---\nkind: [\n", fine_peer()),
            &["invalid YAML"],
        );
        assert_rejected(
            env,
            "duplicate",
            &docs(&[fine_peer(), fine_peer()]),
            &["document 2 (BGPPeer \"new-peer\"): BGPPeer \"new-peer\" appears twice"],
        );
    });
}

#[test]
fn create_and_replace_are_strict_and_files_are_separate_batches() {
    on_both_backends(|env| {
        env.ctl(&["create", "-f", "examples/ippool.yaml"])
            .ok()
            .stdout_has("ippool/default-ipv4 created");
        let before = env.dump();
        env.ctl(&["create", "-f", "examples/ippool.yaml"])
            .code(1)
            .stderr_has("document 1 (IPPool \"default-ipv4\"): already exists");
        env.assert_unchanged(&before, "create of an existing pool");

        let missing = env.file(
            "missing.yaml",
            &doc("IPPool", "missing", "  cidr: 10.9.0.0/16\n"),
        );
        env.ctl(&["replace", "-f", &missing])
            .code(1)
            .stderr_has("document 1 (IPPool \"missing\"): not found");
        env.assert_unchanged(&before, "replace of a missing pool");

        let nat = env.file(
            "nat.yaml",
            &doc(
                "IPPool",
                "default-ipv4",
                "  cidr: 10.244.0.0/16\n  natOutgoing: false\n",
            ),
        );
        env.ctl(&["replace", "-f", &nat])
            .ok()
            .stdout_has("ippool/default-ipv4 replaced");

        // Each -f file is its own batch: the good file is written, the bad one is not.
        let good = env.file("good.yaml", &fine_peer());
        let bad = env.file("bad.yaml", &doc("IPPool", "p2", "  cidr: 10.0.0.0/33\n"));
        let run = env
            .ctl(&["apply", "-f", &good, "-f", &bad])
            .code(1)
            .stdout_has("bgppeer/new-peer created")
            .stderr_has("bad.yaml: document 1 (IPPool \"p2\"): spec.cidr");
        assert!(!run.stderr.contains("good.yaml"), "{run:?}");
        env.ctl(&["get", "ippool", "p2"]).code(1);

        // A missing file fails before anything is written.
        let before = env.dump();
        let other = env.file(
            "other.yaml",
            &doc("IPPool", "other", "  cidr: 10.10.0.0/16\n"),
        );
        env.ctl(&["apply", "-f", &other, "-f", "/nonexistent/x.yaml"])
            .code(1)
            .stderr_has("/nonexistent/x.yaml");
        env.assert_unchanged(&before, "apply with a missing file");

        // What `get -o json` prints (a List) can be applied back.
        let list = env.ctl(&["get", "bgppeers", "-o", "json"]).ok().stdout;
        env.ctl_stdin(&["apply", "-f", "-"], Some(&list))
            .ok()
            .stdout_has("bgppeer/new-peer unchanged");
    });
}
