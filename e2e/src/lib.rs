//! End-to-end tests of tortie with real clients and real routers; the tests are in `tests/`
//! (`cni_runtimes.rs`: the CNI plugin under cnitool, podman and containerd's CRI, driving the
//! scripts in `cni/`; `agent_bgp.rs`: agents, pods and BIRD across nodes). This library holds
//! the helpers they share.

/// Helpers for tests that drive processes and namespaces.
pub mod testkit {
    use std::path::PathBuf;
    use std::process::Command;
    use std::time::{Duration, Instant};

    /// Runs `cmd` with `sh -c`: success and stdout + stderr.
    pub fn sh(cmd: &str) -> (bool, String) {
        let out = Command::new("sh").args(["-c", cmd]).output().expect("sh");
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    /// Like [`sh`], panicking with the output on failure.
    pub fn must(cmd: &str) -> String {
        let (ok, out) = sh(cmd);
        assert!(ok, "{cmd}: {out}");
        out
    }

    /// `target/<profile>/`, where `cargo build --workspace --bins` (scripts/test) puts every
    /// package's programs; the test executable lives in `target/<profile>/deps/`.
    pub fn target_profile_dir() -> PathBuf {
        let exe = std::env::current_exe().expect("current exe");
        exe.parent().unwrap().parent().unwrap().to_path_buf()
    }

    /// A workspace program, or a panic that says how to build it.
    pub fn workspace_bin(name: &str) -> PathBuf {
        let p = target_profile_dir().join(name);
        assert!(
            p.exists(),
            "{} is missing: build the workspace first (scripts/test does: \
             `cargo build --workspace --bins`)",
            p.display()
        );
        p
    }

    /// Polls `f` every 20 ms until it gives a value, panicking after `timeout`.
    pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = f() {
                return v;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
