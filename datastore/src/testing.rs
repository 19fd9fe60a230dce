//! Test support: a throw-away etcd from Debian's `etcd-server` package, and a fake
//! Kubernetes API server.
//!
//! Each [`EtcdServer`] listens on 127.0.0.1 only, on ports the kernel picked, with its data in
//! a temporary directory on /dev/shm when available (etcd 3.4 has no `--unsafe-no-fsync`, and
//! fsync on tmpfs is free). It is killed, by the PID we started, when dropped.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running etcd.
pub struct EtcdServer {
    child: Child,
    client_port: u16,
    _dir: tempfile::TempDir,
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Where the `etcd` binary is: `$TORTIE_ETCD_BIN`, else `etcd` on the PATH.
pub fn etcd_binary() -> PathBuf {
    std::env::var_os("TORTIE_ETCD_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("etcd"))
}

impl EtcdServer {
    /// Starts etcd and waits until it answers.
    pub fn start() -> std::io::Result<Self> {
        let base = if std::path::Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let dir = tempfile::Builder::new()
            .prefix("tortie-etcd-")
            .tempdir_in(base)?;
        // Two attempts: a port picked free can be taken by someone else before etcd binds it.
        let mut last_err = None;
        for _ in 0..3 {
            let (client_port, peer_port) = (free_port()?, free_port()?);
            let client = format!("http://127.0.0.1:{client_port}");
            let peer = format!("http://127.0.0.1:{peer_port}");
            let log = std::fs::File::create(dir.path().join("etcd.log"))?;
            let mut child = Command::new(etcd_binary())
                .args(["--name", "tortie-test"])
                .arg("--data-dir")
                .arg(dir.path().join("data"))
                .args([
                    "--listen-client-urls",
                    &client,
                    "--advertise-client-urls",
                    &client,
                ])
                .args([
                    "--listen-peer-urls",
                    &peer,
                    "--initial-advertise-peer-urls",
                    &peer,
                ])
                .args(["--initial-cluster", &format!("tortie-test={peer}")])
                .args(["--log-level", "warn", "--logger", "zap"])
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()?;
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if let Some(status) = child.try_wait()? {
                    last_err = Some(std::io::Error::other(format!(
                        "etcd exited with {status}; log: {}",
                        std::fs::read_to_string(dir.path().join("etcd.log")).unwrap_or_default()
                    )));
                    break;
                }
                if std::net::TcpStream::connect(("127.0.0.1", client_port)).is_ok() {
                    return Ok(EtcdServer {
                        child,
                        client_port,
                        _dir: dir,
                    });
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    last_err = Some(std::io::Error::other("etcd did not start within 20 s"));
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Err(last_err.unwrap_or_else(|| std::io::Error::other("etcd did not start")))
    }

    /// `etcd://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("etcd://127.0.0.1:{}", self.client_port)
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fake Kubernetes API server (`testdata/fake-apiserver.py`: the REST, resourceVersion,
/// precondition and watch semantics of kube-apiserver, in memory; no schema, no admission),
/// on a port of 127.0.0.1 the kernel picked. Killed, by the PID we started, when dropped.
pub struct FakeApiServer {
    child: Child,
    port: u16,
}

impl FakeApiServer {
    /// Starts it and waits until it answers.
    pub fn start() -> std::io::Result<Self> {
        use std::io::BufRead;
        let script =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/fake-apiserver.py");
        let mut child = Command::new("python3")
            .arg(&script)
            .arg("0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line)?;
        let port = line.trim().parse().map_err(|_| {
            let _ = child.kill();
            std::io::Error::other(format!("fake API server said {line:?}"))
        })?;
        Ok(FakeApiServer { child, port })
    }

    /// `kubernetes+http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("kubernetes+http://127.0.0.1:{}", self.port)
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Posts a test hook (`fail`, `compact`) with a JSON body; returns the answer.
    pub fn hook(&self, name: &str, body: &str) -> std::io::Result<String> {
        http_request(self.port, "POST", &format!("/_fake/{name}"), body)
    }

    /// A GET on the server (`/_fake/stats`, or any API path); returns the body.
    pub fn get(&self, path: &str) -> std::io::Result<String> {
        http_request(self.port, "GET", path, "")
    }

    /// Any request (what kubectl would do: create a Pod, delete a Node); returns the body.
    pub fn request(&self, method: &str, path: &str, body: &str) -> std::io::Result<String> {
        http_request(self.port, method, path, body)
    }
}

/// A minimal HTTP/1.1 request with `Connection: close` (test hooks only).
fn http_request(port: u16, method: &str, path: &str, body: &str) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default())
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The real API server the Kubernetes tests run against instead of the fake one, when
/// `TORTIE_TEST_KUBECONFIG` names its kubeconfig (the CRDs of manifests/crds applied).
pub fn real_kubeconfig() -> Option<String> {
    std::env::var("TORTIE_TEST_KUBECONFIG")
        .ok()
        .filter(|p| !p.is_empty())
}

/// One test at a time on a shared real API server (tests in one process; see
/// [`real_kubeconfig`]).
pub static REAL_API_SERVER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Deletes every object of every tortie.io kind (and the internal datastore keys) from the
/// cluster at `url`: a clean slate for the next test on a shared real API server.
#[cfg(feature = "kubernetes")]
pub async fn wipe_kubernetes(url: &str) -> Result<(), crate::Error> {
    use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams};
    let config = crate::kubernetes::config_for(url).await?;
    let client = kube::Client::try_from(config)
        .map_err(|e| crate::Error::Unavailable(format!("Kubernetes client: {e}")))?;
    let mut kinds: Vec<(String, String)> = tortie_api::Kind::ALL
        .iter()
        .map(|k| (k.name().to_string(), k.plural().to_string()))
        .collect();
    kinds.push((
        crate::kubernetes::INTERNAL_KIND.to_string(),
        crate::kubernetes::INTERNAL_PLURAL.to_string(),
    ));
    for (kind, plural) in kinds {
        let ar = ApiResource {
            group: crate::kubernetes::GROUP.into(),
            version: "v1".into(),
            api_version: format!("{}/v1", crate::kubernetes::GROUP),
            kind,
            plural,
        };
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
        api.delete_collection(&DeleteParams::default(), &ListParams::default())
            .await
            .map_err(|e| crate::Error::Unavailable(format!("wipe {}: {e}", ar.plural)))?;
    }
    Ok(())
}
