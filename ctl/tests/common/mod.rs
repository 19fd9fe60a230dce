//! Shared harness: runs the real `tortiectl` binary against a throw-away SQLite file and a
//! throw-away etcd, so every scenario is checked on both backends.

#![allow(dead_code)]

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use tortie_api::Kind;
use tortie_datastore::testing::EtcdServer;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_tortiectl");

/// The workspace root; commands run there so that `examples/` resolves.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("ctl/ has a parent")
        .to_path_buf()
}

/// The result of one `tortiectl` run.
pub struct Run {
    pub cmd: String,
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl fmt::Debug for Run {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "\n$ {}\nexit status: {}\n--- stdout ---\n{}--- stderr ---\n{}",
            self.cmd, self.code, self.stdout, self.stderr
        )
    }
}

impl Run {
    /// Asserts success.
    #[track_caller]
    pub fn ok(self) -> Self {
        assert_eq!(self.code, 0, "expected success:{self:?}");
        self
    }

    /// Asserts the exit status.
    #[track_caller]
    pub fn code(self, code: i32) -> Self {
        assert_eq!(self.code, code, "expected exit status {code}:{self:?}");
        self
    }

    /// Asserts that stderr contains `text`.
    #[track_caller]
    pub fn stderr_has(self, text: &str) -> Self {
        assert!(self.stderr.contains(text), "stderr lacks {text:?}:{self:?}");
        self
    }

    /// Asserts that stdout contains `text`.
    #[track_caller]
    pub fn stdout_has(self, text: &str) -> Self {
        assert!(self.stdout.contains(text), "stdout lacks {text:?}:{self:?}");
        self
    }

    /// Stdout parsed as JSON.
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):{self:?}"))
    }

    /// Stdout lines split into whitespace-separated cells.
    pub fn table(&self) -> Vec<Vec<String>> {
        self.stdout
            .lines()
            .map(|l| l.split_whitespace().map(str::to_string).collect())
            .collect()
    }
}

/// Runs the binary with `args` (and `stdin`), in the workspace root, with no
/// `TORTIE_DATASTORE` from the caller's environment unless given in `env`.
pub fn run_raw(args: &[&str], stdin: Option<&str>, env: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .current_dir(workspace_root())
        .env_remove("TORTIE_DATASTORE")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("tortiectl starts");
    if let Some(text) = stdin {
        let mut pipe = child.stdin.take().expect("stdin is piped");
        pipe.write_all(text.as_bytes())
            .expect("stdin accepts the input");
    }
    let out = child.wait_with_output().expect("tortiectl runs");
    let mut shown = vec!["tortiectl".to_string()];
    shown.extend(env.iter().map(|(k, v)| format!("{k}={v}")));
    shown.extend(args.iter().map(|a| {
        if a.contains(' ') || a.is_empty() {
            format!("'{a}'")
        } else {
            a.to_string()
        }
    }));
    Run {
        cmd: shown.join(" "),
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// One backend with an empty datastore and a scratch directory for files.
pub struct Env {
    pub backend: &'static str,
    pub url: String,
    pub dir: tempfile::TempDir,
    _etcd: Option<EtcdServer>,
}

impl Env {
    /// A fresh (created, empty) SQLite datastore in a temporary directory.
    pub fn sqlite() -> Env {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("store.db");
        tortie_datastore::sqlite::SqliteBackend::open(&path).expect("create the store");
        let url = format!("sqlite://{}", path.display());
        Env {
            backend: "sqlite",
            url,
            dir,
            _etcd: None,
        }
    }

    /// A fresh etcd.
    pub fn etcd(server: EtcdServer) -> Env {
        Env {
            backend: "etcd",
            url: server.url(),
            dir: tempfile::tempdir().expect("temp dir"),
            _etcd: Some(server),
        }
    }

    /// `tortiectl --datastore URL args…`.
    pub fn ctl(&self, args: &[&str]) -> Run {
        self.ctl_stdin(args, None)
    }

    /// `tortiectl --datastore URL args…` with `stdin`.
    pub fn ctl_stdin(&self, args: &[&str], stdin: Option<&str>) -> Run {
        let mut all = vec!["--datastore", self.url.as_str()];
        all.extend_from_slice(args);
        run_raw(&all, stdin, &[])
    }

    /// Writes a file in the scratch directory and returns its path.
    pub fn file(&self, name: &str, text: &str) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).expect("scratch file written");
        path.display().to_string()
    }

    /// Every stored object of every kind as JSON (with resource versions): equal dumps mean
    /// nothing was written.
    pub fn dump(&self) -> String {
        let mut out = String::new();
        for kind in Kind::ALL {
            let run = self.ctl(&["get", kind.plural(), "-o", "json"]).ok();
            out.push_str(&format!("== {} ==\n{}", kind.plural(), run.stdout));
        }
        out
    }

    /// Asserts that the datastore holds exactly `before`.
    #[track_caller]
    pub fn assert_unchanged(&self, before: &str, what: &str) {
        let after = self.dump();
        assert_eq!(before, after, "[{}] {what} wrote something", self.backend);
    }
}

/// Runs `scenario` on SQLite and on etcd (started in the background meanwhile), each with an
/// empty datastore of its own.
pub fn on_both_backends(scenario: impl Fn(&Env)) {
    let etcd = std::thread::spawn(EtcdServer::start);
    scenario(&Env::sqlite());
    let server = etcd
        .join()
        .expect("etcd start does not panic")
        .expect("a throw-away etcd starts (is etcd installed? TORTIE_ETCD_BIN)");
    scenario(&Env::etcd(server));
}

/// A resource document.
pub fn doc(kind: &str, name: &str, spec: &str) -> String {
    format!("apiVersion: tortie.io/v1\nkind: {kind}\nmetadata:\n  name: {name}\nspec:\n{spec}")
}

/// Joins documents into one multi-document YAML text.
pub fn docs(parts: &[String]) -> String {
    parts.join("---\n")
}
