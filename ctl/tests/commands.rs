//! get / label / patch / delete / validate / version / completion, exit statuses.

mod common;

use common::{Env, doc, docs, on_both_backends, run_raw};

fn with_examples(env: &Env) {
    env.ctl(&["apply", "-f", "examples/"]).ok();
}

/// The row of `name` in a table.
fn row_of(table: &[Vec<String>], name: &str) -> Vec<String> {
    table
        .iter()
        .find(|r| r.first().is_some_and(|n| n == name))
        .cloned()
        .unwrap_or_else(|| panic!("no row {name:?} in {table:?}"))
}

#[test]
fn get_tables_show_the_columns() {
    on_both_backends(|env| {
        env.ctl(&["get", "ippools"])
            .ok()
            .stderr_has("No ippools found.");
        with_examples(env);

        let pools = env.ctl(&["get", "ippool"]).ok();
        let t = pools.table();
        assert_eq!(
            t[0],
            [
                "NAME",
                "CIDR",
                "BLOCKSIZE",
                "NAT",
                "VXLAN",
                "DISABLED",
                "SELECTOR"
            ],
            "{pools:?}"
        );
        assert_eq!(
            row_of(&t, "default-ipv4"),
            [
                "default-ipv4",
                "10.244.0.0/16",
                "26",
                "true",
                "Never",
                "false",
                "all()"
            ]
        );
        // Borderless, left-aligned, aligned columns.
        let header = pools.stdout.lines().next().unwrap();
        let row = pools.stdout.lines().nth(1).unwrap();
        assert!(
            header.starts_with("NAME   ") && !header.contains('|'),
            "{pools:?}"
        );
        assert_eq!(header.find("CIDR"), row.find("10.244.0.0/16"), "{pools:?}");

        let wide = env.ctl(&["get", "ipp", "-o", "wide"]).ok();
        let t = wide.table();
        assert_eq!(t[0][7..], ["DISABLEBGPEXPORT", "ALLOWEDUSES"], "{wide:?}");
        assert_eq!(
            row_of(&t, "default-ipv4")[7..],
            ["false", "Workload,Tunnel"]
        );

        let peers = env.ctl(&["get", "bgppeers"]).ok();
        let lines: Vec<&str> = peers.stdout.lines().collect();
        assert_eq!(
            lines[0].split_whitespace().collect::<Vec<_>>(),
            ["NAME", "PEERIP", "NODE", "ASN"],
            "{peers:?}"
        );
        assert_eq!(
            row_of(&peers.table(), "tor-global"),
            ["tor-global", "198.18.0.1", "(global)", "65001"]
        );
        let rack = lines
            .iter()
            .find(|l| l.starts_with("rack-1-tor"))
            .expect("rack peer row");
        assert!(
            rack.contains("198.18.1.1")
                && rack.contains("rack == 'rack-1'")
                && rack.contains("65011"),
            "{peers:?}"
        );
        let wide = env.ctl(&["get", "bgppeer", "-o", "wide"]).ok();
        assert!(
            wide.stdout.lines().next().unwrap().contains("PEERSELECTOR"),
            "{wide:?}"
        );
        assert!(wide.stdout.contains("90s"), "{wide:?}");

        let conf = env.ctl(&["get", "bgpconfig"]).ok();
        assert_eq!(
            conf.table(),
            vec![
                vec![
                    "NAME",
                    "LOGSEVERITY",
                    "MESHENABLED",
                    "ASNUMBER",
                    "LISTENPORT"
                ],
                vec!["default", "Info", "false", "64512", "179"],
            ]
        );

        // A node's AS number: its own, or the inherited one in parentheses.
        let nodes = env.file(
            "nodes.yaml",
            &docs(&[
                doc("Node", "n1", "  bgp:\n    ipv4Address: 198.18.0.10/24\n"),
                doc(
                    "Node",
                    "n2",
                    "  bgp:\n    ipv4Address: 198.18.0.11/24\n    asNumber: 65100\n",
                ),
            ]),
        );
        env.ctl(&["apply", "-f", &nodes]).ok();
        let t = env.ctl(&["get", "nodes"]).ok().table();
        assert_eq!(t[0], ["NAME", "ASN", "IPV4", "IPV6"]);
        assert_eq!(row_of(&t, "n1"), ["n1", "(64512)", "198.18.0.10/24"]);
        assert_eq!(row_of(&t, "n2"), ["n2", "65100", "198.18.0.11/24"]);
    });
}

#[test]
fn get_formats_selectors_and_missing_names() {
    on_both_backends(|env| {
        with_examples(env);
        // One name: the object itself.
        let one = env
            .ctl(&["get", "bgppeer", "tor-global", "-o", "json"])
            .ok()
            .json();
        assert_eq!(one["kind"], "BGPPeer");
        assert_eq!(one["metadata"]["name"], "tor-global");
        assert_eq!(one["spec"]["peerIP"], "198.18.0.1");
        // Several: a List.
        let list = env.ctl(&["get", "bgppeers", "-o", "json"]).ok().json();
        assert_eq!(list["apiVersion"], "tortie.io/v1");
        assert_eq!(list["kind"], "List");
        assert_eq!(list["items"].as_array().unwrap().len(), 2);
        let yaml = env.ctl(&["get", "bgppeer", "-o", "yaml"]).ok();
        assert_eq!(yaml.stdout.matches("kind: BGPPeer").count(), 2, "{yaml:?}");
        assert_eq!(yaml.stdout.matches("\n---\n").count(), 1, "{yaml:?}");
        let single = env
            .ctl(&["get", "ippool", "default-ipv4", "-o", "yaml"])
            .ok();
        assert!(
            single.stdout.starts_with("apiVersion: tortie.io/v1\n"),
            "{single:?}"
        );

        // Not found: exit 1, the found ones still printed.
        env.ctl(&["get", "ippool", "nosuch"])
            .code(1)
            .stderr_has("IPPool \"nosuch\" not found");
        env.ctl(&["get", "bgppeers", "tor-global", "nosuch", "-o", "json"])
            .code(1)
            .stdout_has("\"tor-global\"")
            .stderr_has("BGPPeer \"nosuch\" not found");

        // Label selectors.
        env.ctl(&["label", "bgppeer", "tor-global", "tier=core"])
            .ok();
        let sel = env
            .ctl(&["get", "bgppeers", "-l", "tier == 'core'", "-o", "json"])
            .ok()
            .json();
        let names: Vec<&str> = sel["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["metadata"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["tor-global"]);
        let none = env
            .ctl(&["get", "bgppeers", "-l", "tier == 'edge'", "-o", "json"])
            .ok()
            .json();
        assert_eq!(none["items"].as_array().unwrap().len(), 0);
    });
}

#[test]
fn usage_errors_exit_2() {
    let url = "--datastore=etcd://127.0.0.1:1";
    for (args, expect) in [
        (vec![], "Usage:"),
        (vec![url, "frobnicate"], "unrecognized subcommand"),
        (vec![url, "get"], "<KIND>"),
        (
            vec![url, "get", "nosuchkind"],
            "valid kinds: ippool (ippools, ipp, pool, pools)",
        ),
        (
            vec![url, "get", "ippool", "-o", "xml"],
            "invalid value 'xml'",
        ),
        (
            vec![url, "get", "ippool", "-l", "a =="],
            "is not a valid selector",
        ),
        (
            vec![url, "get", "ippool", "x", "-l", "a == 'b'"],
            "cannot be used with",
        ),
        (vec![url, "apply"], "--filename"),
        (
            vec![url, "label", "ippool", "p", "novalue"],
            "use key=value",
        ),
        (vec![url, "delete"], "required"),
        (
            vec![url, "delete", "ippool", "x", "-f", "examples/"],
            "cannot be used with",
        ),
        (vec![url, "patch", "ippool", "p"], "--patch"),
        (vec![url, "completion", "tcsh"], "invalid value 'tcsh'"),
    ] {
        run_raw(&args, None, &[]).code(2).stderr_has(expect);
    }
    run_raw(&["--help"], None, &[])
        .ok()
        .stdout_has("Usage: tortiectl");
    run_raw(&["--version"], None, &[])
        .ok()
        .stdout_has(env!("CARGO_PKG_VERSION"));
    run_raw(&["get", "--help"], None, &[])
        .ok()
        .stdout_has("--selector");
}

#[test]
fn label_sets_changes_and_removes_with_cas() {
    on_both_backends(|env| {
        with_examples(env);
        let labels = |env: &Env| {
            env.ctl(&["get", "ippool", "default-ipv4", "-o", "json"])
                .ok()
                .json()["metadata"]["labels"]
                .clone()
        };
        env.ctl(&["label", "ippool", "default-ipv4", "env=prod", "team=net"])
            .ok()
            .stdout_has("ippool/default-ipv4 labeled");
        assert_eq!(
            labels(env),
            serde_json::json!({"env": "prod", "team": "net"})
        );

        let before = env.dump();
        env.ctl(&["label", "ippool", "default-ipv4", "env=dev"])
            .code(1)
            .stderr_has("label \"env\" already has a value (\"prod\"), and --overwrite is not set");
        env.assert_unchanged(&before, "label without --overwrite");
        env.ctl(&["label", "ippool", "default-ipv4", "env=prod"])
            .ok()
            .stdout_has("not labeled");
        env.assert_unchanged(&before, "label with the same value");
        env.ctl(&["label", "ippool", "default-ipv4", "bad key=x"])
            .code(1)
            .stderr_has("metadata.labels");
        env.assert_unchanged(&before, "label with a bad key");

        env.ctl(&["label", "ippool", "default-ipv4", "env=dev", "--overwrite"])
            .ok()
            .stdout_has("labeled");
        env.ctl(&["label", "ippool", "default-ipv4", "team-", "gone-"])
            .ok()
            .stderr_has("label \"gone\" not found");
        assert_eq!(labels(env), serde_json::json!({"env": "dev"}));

        env.ctl(&["label", "ippool", "nosuch", "a=b"])
            .code(1)
            .stderr_has("IPPool \"nosuch\" not found");
    });
}

#[test]
fn patch_merges_revalidates_and_refuses_identity_changes() {
    on_both_backends(|env| {
        with_examples(env);
        let pool = |env: &Env| {
            env.ctl(&["get", "ippool", "default-ipv4", "-o", "json"])
                .ok()
                .json()
        };
        let rv0 = pool(env)["metadata"]["resourceVersion"].clone();

        env.ctl(&[
            "patch",
            "ippool",
            "default-ipv4",
            "-p",
            r#"{"spec":{"natOutgoing":false,"vxlanMode":"CrossSubnet"},"metadata":{"labels":{"a":"1"}}}"#,
        ])
        .ok()
        .stdout_has("ippool/default-ipv4 patched");
        let p = pool(env);
        assert_eq!(p["spec"]["natOutgoing"], false);
        assert_eq!(p["spec"]["vxlanMode"], "CrossSubnet");
        assert_eq!(p["spec"]["blockSize"], 26);
        assert_eq!(p["metadata"]["labels"]["a"], "1");
        assert_ne!(p["metadata"]["resourceVersion"], rv0);

        // null deletes.
        env.ctl(&[
            "patch",
            "ipp",
            "default-ipv4",
            "-p",
            r#"{"metadata":{"labels":{"a":null}}}"#,
        ])
        .ok();
        assert!(pool(env)["metadata"].get("labels").is_none());
        env.ctl(&[
            "patch",
            "ipp",
            "default-ipv4",
            "-p",
            r#"{"spec":{"disabled":false}}"#,
        ])
        .ok()
        .stdout_has("patched (no change)");

        let before = env.dump();
        for (patch, expect) in [
            (r#"{"spec":{"foo":1}}"#, "spec.foo: unknown field"),
            (
                r#"{"spec":{"blockSize":28}}"#,
                "spec.blockSize: 28 may not change",
            ),
            (
                r#"{"spec":{"cidr":"10.0.0.0/33"}}"#,
                "spec.cidr: \"10.0.0.0/33\" is not a valid CIDR",
            ),
            (r#"{"spec":{"nodeSelector":"x =="}}"#, "spec.nodeSelector"),
            (
                r#"{"metadata":{"name":"other"}}"#,
                "metadata.name may not be changed",
            ),
            (r#"{"metadata":null}"#, "metadata.name may not be changed"),
            (r#"{"kind":"BGPPeer"}"#, "kind may not be changed"),
            (r#"{"apiVersion":"v2"}"#, "apiVersion may not be changed"),
            (
                r#"{"metadata":{"resourceVersion":"1"},"spec":{"disabled":true}}"#,
                "modified concurrently",
            ),
            ("[1]", "must be a JSON object"),
            ("{not json", "not valid JSON"),
        ] {
            env.ctl(&["patch", "ippool", "default-ipv4", "-p", patch])
                .code(1)
                .stderr_has(expect);
        }
        env.assert_unchanged(&before, "rejected patches");
        env.ctl(&["patch", "ippool", "nosuch", "-p", "{}"])
            .code(1)
            .stderr_has("IPPool \"nosuch\" not found");
    });
}

#[test]
fn delete_by_name_and_by_file_is_atomic() {
    on_both_backends(|env| {
        with_examples(env);
        let before = env.dump();
        env.ctl(&["delete", "bgppeer", "tor-global", "nosuch"])
            .code(1)
            .stderr_has("bgppeer/nosuch: not found")
            .stderr_has("nothing was deleted");
        env.assert_unchanged(&before, "delete with a missing name");

        env.ctl(&[
            "delete",
            "bgppeers",
            "tor-global",
            "nosuch",
            "tor-global",
            "--skip-not-found",
        ])
        .ok()
        .stdout_has("bgppeer/tor-global deleted")
        .stderr_has("bgppeer/nosuch not found, skipped");
        env.ctl(&["get", "bgppeer", "tor-global"]).code(1);

        env.ctl(&["delete", "-f", "examples/bgppeers.yaml"])
            .code(1)
            .stderr_has("document 1 (BGPPeer \"tor-global\"): not found");
        env.ctl(&["get", "bgppeer", "rack-1-tor"]).ok();
        env.ctl(&["delete", "-f", "examples/bgppeers.yaml", "--skip-not-found"])
            .ok()
            .stdout_has("bgppeer/rack-1-tor deleted");

        env.ctl_stdin(
            &["delete", "-f", "-"],
            Some(
                &std::fs::read_to_string(common::workspace_root().join("examples/ippool.yaml"))
                    .unwrap(),
            ),
        )
        .ok()
        .stdout_has("ippool/default-ipv4 deleted");
        env.ctl(&["delete", "bgpconfig", "default"])
            .ok()
            .stdout_has("bgpconfiguration/default deleted");
        for kind in ["ippools", "bgppeers", "bgpconfigs"] {
            env.ctl(&["get", kind]).ok().stderr_has("found.");
        }
    });
}

#[test]
fn ipam_kinds_are_read_only() {
    on_both_backends(|env| {
        env.ctl(&["get", "ipamblocks"]).ok();
        env.ctl(&["get", "blockaffinities", "-o", "json"]).ok();
        for args in [
            vec!["delete", "ipamblock", "b"],
            vec!["label", "ipamhandle", "h", "a=b"],
            vec!["patch", "blockaffinity", "x", "-p", "{}"],
        ] {
            env.ctl(&args)
                .code(1)
                .stderr_has("is managed by tortie's IPAM");
        }
    });
}

#[test]
fn validate_never_touches_the_datastore() {
    // An unreachable datastore: validate must not need it.
    let url = "--datastore=etcd://127.0.0.1:1";
    run_raw(&[url, "validate", "-f", "examples/"], None, &[])
        .ok()
        .stdout_has("4 resources valid");
    run_raw(
        &[
            url,
            "validate",
            "-f",
            "examples/ippool.yaml",
            "-f",
            "examples/bgppeers.yaml",
        ],
        None,
        &[],
    )
    .ok()
    .stdout_has("3 resources valid");

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        docs(&[
            doc("IPPool", "p1", "  cidr: 10.1.0.0/16\n"),
            doc("IPPool", "p2", "  cidr: 10.0.0.0/33\n"),
            doc("BGPPeer", "x", "  peerIP: 198.18.0.1\n"),
            doc("IPPool", "p3", "  cidr: 10.1.128.0/17\n"),
        ]),
    )
    .unwrap();
    let bad = bad.display().to_string();
    let run = run_raw(&[url, "validate", "-f", &bad], None, &[])
        .code(1)
        .stderr_has(&format!(
            "{bad}: document 2 (IPPool \"p2\"): spec.cidr: \"10.0.0.0/33\" is not a valid CIDR"
        ))
        .stderr_has("document 3 (BGPPeer \"x\"): spec.asNumber: is required with spec.peerIP")
        .stderr_has(
            "document 4 (IPPool \"p3\"): spec.cidr: \"10.1.128.0/17\" overlaps IPPool \"p1\"",
        );
    assert!(!run.stdout.contains("valid"), "{run:?}");

    let stdin = doc("IPPool", "p1", "  cidr: 10.1.0.0/16\n");
    run_raw(&[url, "validate", "-f", "-"], Some(&stdin), &[])
        .ok()
        .stdout_has("1 resource valid");
    run_raw(&[url, "validate", "-f", "/nonexistent.yaml"], None, &[])
        .code(1)
        .stderr_has("/nonexistent.yaml");
}

#[test]
fn reads_never_create_an_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("typo").join("store.db");
    let url = format!("sqlite://{}", path.display());
    for args in [
        vec!["get", "ippools"],
        vec!["delete", "ippool", "x"],
        vec!["label", "node", "n", "a=b"],
    ] {
        let mut full = vec!["--datastore", url.as_str()];
        full.extend(args);
        run_raw(&full, None, &[])
            .code(1)
            .stderr_has("no datastore at");
    }
    assert!(!path.exists() && !path.parent().unwrap().exists());
}

#[test]
fn version_reports_client_and_datastore() {
    on_both_backends(|env| {
        let run = env.ctl(&["version"]).ok();
        assert!(
            run.stdout
                .contains(&format!("Client Version:    {}", env!("CARGO_PKG_VERSION")))
        );
        assert!(
            run.stdout
                .contains(&format!("Datastore URL:     {}\n", env.url)),
            "{run:?}"
        );
        let scheme = format!("Datastore:         {}://", env.backend);
        assert!(run.stdout.contains(&scheme), "{run:?}");
    });
    run_raw(
        &["--datastore", "etcd://127.0.0.1:1", "version", "--client"],
        None,
        &[],
    )
    .ok()
    .stdout_has("Client Version:");
    run_raw(&["--datastore", "etcd://127.0.0.1:1", "version"], None, &[])
        .code(1)
        .stdout_has("Client Version:")
        .stderr_has("datastore etcd://127.0.0.1:1");
    run_raw(&["--datastore", "mysql://x", "version"], None, &[])
        .code(1)
        .stderr_has("expected sqlite:///path, etcd://host:port or kubernetes:");
}

#[test]
fn datastore_comes_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("env.db").display());
    let env = [("TORTIE_DATASTORE", url.as_str())];
    run_raw(&["apply", "-f", "examples/ippool.yaml"], None, &env).ok();
    run_raw(&["get", "ippool", "default-ipv4"], None, &env).ok();
    // The flag wins over the environment.
    let other = format!("sqlite://{}", dir.path().join("other.db").display());
    run_raw(
        &["--datastore", &other, "get", "ippool", "default-ipv4"],
        None,
        &env,
    )
    .code(1);
}

#[test]
fn completion_scripts() {
    for shell in ["bash", "zsh", "fish", "powershell", "elvish"] {
        let run = run_raw(&["completion", shell], None, &[]).ok();
        assert!(run.stdout.contains("tortiectl"), "{shell}:{run:?}");
        assert!(run.stdout.contains("apply"), "{shell}:{run:?}");
    }
}
