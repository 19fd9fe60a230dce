//! Test lab for BGP interop: throw-away network namespaces joined by veth pairs, with real
//! daemons (tortie-bgpd, BIRD, FRR, GoBGP) started inside them.
//!
//! Safety: everything happens inside namespaces named `tb<pid>x<n>…`, created here and deleted on
//! drop (also when a test panics), with the processes we started killed by PID first. Nothing is
//! configured in the root namespace. Addresses come from 198.18.0.0/15 and fd00:198:18::/48.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// One namespace.
pub struct Ns {
    pub name: String,
}

impl Ns {
    /// Runs a command inside the namespace and returns its stdout (panics on failure).
    pub fn sh(&self, cmd: &str) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name, "sh", "-c", cmd])
            .output()
            .expect("ip netns exec");
        assert!(
            out.status.success(),
            "in {}: {cmd}: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Like `sh` but returns None instead of panicking.
    pub fn try_sh(&self, cmd: &str) -> Option<String> {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name, "sh", "-c", cmd])
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// A set of namespaces and processes, removed on drop.
pub struct Lab {
    pub prefix: String,
    pub dir: tempfile::TempDir,
    namespaces: Vec<String>,
    children: Vec<Child>,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Lab {
    pub fn new() -> Lab {
        let prefix = format!(
            "tb{}x{}",
            std::process::id() % 100_000,
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        let dir = tempfile::Builder::new()
            .prefix("tortie-bgp-lab-")
            .tempdir()
            .expect("tempdir");
        // FRR daemons run as user frr and must reach their files.
        let _ = Command::new("chmod")
            .args(["755", dir.path().to_str().unwrap()])
            .status();
        Lab {
            prefix,
            dir,
            namespaces: Vec::new(),
            children: Vec::new(),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, text).expect("write");
        p
    }

    /// A new namespace with loopback up and forwarding on (inside it only).
    pub fn ns(&mut self, short: &str) -> Ns {
        let name = format!("{}{}", self.prefix, short);
        ip(&["netns", "add", &name]);
        self.namespaces.push(name.clone());
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        Ns { name }
    }

    /// A veth pair between two namespaces with the given addresses (CIDR notation, v4 and v6).
    pub fn link(&self, a: &Ns, a_addrs: &[&str], b: &Ns, b_addrs: &[&str]) {
        let ia = format!("v{}", NEXT.fetch_add(1, Ordering::SeqCst));
        let ib = format!("{ia}p");
        ip(&[
            "link", "add", &ia, "netns", &a.name, "type", "veth", "peer", "name", &ib, "netns",
            &b.name,
        ]);
        for (ns, ifn, addrs) in [(a, &ia, a_addrs), (b, &ib, b_addrs)] {
            for addr in addrs {
                let mut args = vec![
                    "-n",
                    ns.name.as_str(),
                    "addr",
                    "add",
                    addr,
                    "dev",
                    ifn.as_str(),
                ];
                if addr.contains(':') {
                    args.push("nodad");
                }
                ip(&args);
            }
            ip(&["-n", &ns.name, "link", "set", ifn, "up"]);
        }
    }

    /// Starts a process in a namespace; it is killed (by PID) when the lab is dropped.
    pub fn spawn(&mut self, ns: &Ns, argv: &[&str], log: &str) -> u32 {
        let log = std::fs::File::create(self.path(log)).expect("log");
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.name])
            .args(argv)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn");
        let pid = child.id();
        self.children.push(child);
        pid
    }

    /// Kills one of our processes (SIGKILL or SIGTERM) and reaps it.
    pub fn signal(&mut self, pid: u32, sig: &str) {
        let _ = Command::new("kill").args([sig, &pid.to_string()]).status();
        if let Some(pos) = self.children.iter().position(|c| c.id() == pid) {
            let mut c = self.children.remove(pos);
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).unwrap_or_default()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // Show what the daemons said: the directory is about to go.
            if let Ok(entries) = std::fs::read_dir(self.dir.path()) {
                for e in entries.flatten() {
                    let p = e.path();
                    if p.extension().is_some_and(|x| x == "log") {
                        let text = std::fs::read_to_string(&p).unwrap_or_default();
                        let tail: String = text
                            .chars()
                            .rev()
                            .take(4000)
                            .collect::<Vec<_>>()
                            .into_iter()
                            .rev()
                            .collect();
                        eprintln!("----- {} (last 4000 chars) -----\n{tail}", p.display());
                    }
                }
            }
        }
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        // Daemons that fork (FRR's, BIRD's) were started in the foreground; anything left in our
        // namespaces is ours: kill it by PID before deleting the namespace.
        for ns in &self.namespaces {
            if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-9", pid]).status();
                }
            }
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Polls `f` until it returns Some, or panics after `timeout` with `what`.
pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Queries a tortie-bgpd control socket.
pub fn control(socket: &Path, cmd: &str) -> Option<serde_json::Value> {
    use std::io::{BufRead, BufReader, Write};
    let mut s = std::os::unix::net::UnixStream::connect(socket).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    writeln!(s, "{cmd}").ok()?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).ok()?;
    serde_json::from_str(&line).ok()
}

/// The tortie-bgpd binary.
pub fn tortie_bgpd() -> &'static str {
    env!("CARGO_BIN_EXE_tortie-bgpd")
}

/// True when we may create namespaces and the daemon binaries exist.
pub fn have(bins: &[&str]) -> bool {
    bins.iter().all(|b| Path::new(b).exists())
}
