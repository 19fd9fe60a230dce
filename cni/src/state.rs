//! The plugin's own records on the node, under `dataDir`:
//!
//! - `attachments/<handle>.json`: one per attachment, written before IPAM is asked and removed
//!   by DEL. DEL without a `prevResult` or `CNI_ARGS` still finds the veth; GC knows which
//!   attachments exist without asking the datastore for a node's handles.
//! - `pending-releases/<handle>`: a release DEL could not hand to the agent (it was down). The
//!   agent releases these when it is back (and the plugin retries on GC), so pod teardown
//!   never blocks and no address leaks.
//!
//! Files are written to a temporary name and renamed, so a reader never sees half a record.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One attachment.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    /// IPAM handle.
    pub handle_id: String,
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_IFNAME`.
    pub ifname: String,
    /// Host veth.
    pub host_ifname: String,
    /// Addresses (empty while ADD is still allocating).
    #[serde(default)]
    pub addresses: Vec<IpAddr>,
}

/// The state directory.
#[derive(Debug, Clone)]
pub struct State {
    dir: PathBuf,
}

/// A handle as a file name: handles are `<network>.<containerID>`, but a network name may hold
/// anything, so `/` and a leading `.` are escaped.
fn file_name(handle: &str) -> String {
    let mut s: String = handle
        .chars()
        .map(|c| if c == '/' || c == '\0' { '_' } else { c })
        .collect();
    if s.starts_with('.') {
        s.insert(0, '_');
    }
    s
}

fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().expect("has a parent");
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name().unwrap().to_string_lossy(),
        std::process::id()
    ));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

fn remove(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

impl State {
    /// State under `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> State {
        State { dir: dir.into() }
    }

    fn attachment_path(&self, handle: &str) -> PathBuf {
        self.dir
            .join("attachments")
            .join(format!("{}.json", file_name(handle)))
    }

    fn pending_path(&self, handle: &str) -> PathBuf {
        self.dir.join("pending-releases").join(file_name(handle))
    }

    /// Saves a record.
    pub fn save(&self, r: &Record) -> std::io::Result<()> {
        write_atomic(
            &self.attachment_path(&r.handle_id),
            &serde_json::to_vec(r).expect("serialisable"),
        )
    }

    /// The record of `handle`, if any (an unreadable one counts as absent).
    pub fn load(&self, handle: &str) -> Option<Record> {
        let bytes = std::fs::read(self.attachment_path(handle)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Forgets `handle`.
    pub fn forget(&self, handle: &str) -> std::io::Result<()> {
        remove(&self.attachment_path(handle))
    }

    /// Every record.
    pub fn all(&self) -> Vec<Record> {
        let Ok(dir) = std::fs::read_dir(self.dir.join("attachments")) else {
            return Vec::new();
        };
        let mut v: Vec<Record> = dir
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
            .filter_map(|e| serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok())
            .collect();
        v.sort_by(|a, b| a.handle_id.cmp(&b.handle_id));
        v
    }

    /// Records written at least `age` ago (a pod still being set up is younger).
    pub fn older_than(&self, age: std::time::Duration) -> Vec<Record> {
        let Ok(dir) = std::fs::read_dir(self.dir.join("attachments")) else {
            return Vec::new();
        };
        dir.filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
            .filter(|e| {
                e.metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|a| a >= age)
            })
            .filter_map(|e| serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok())
            .collect()
    }

    /// Records a release for the agent to finish.
    pub fn defer_release(&self, handle: &str) -> std::io::Result<()> {
        write_atomic(&self.pending_path(handle), handle.as_bytes())
    }

    /// Releases waiting for the agent: (handle, file).
    pub fn pending_releases(&self) -> Vec<(String, PathBuf)> {
        pending_releases_in(&self.dir)
    }
}

/// Pending releases under a plugin `dataDir` (used by the agent too).
pub fn pending_releases_in(data_dir: &Path) -> Vec<(String, PathBuf)> {
    let Ok(dir) = std::fs::read_dir(data_dir.join("pending-releases")) else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .filter_map(|e| {
            let handle = std::fs::read_to_string(e.path()).ok()?;
            Some((handle, e.path()))
        })
        .collect()
}

/// Removes a pending release once done.
pub fn finish_release(file: &Path) -> std::io::Result<()> {
    remove(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_pending_releases_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let s = State::new(dir.path());
        let r = Record {
            handle_id: "net/1.abc".into(),
            container_id: "abc".into(),
            ifname: "eth0".into(),
            host_ifname: "cali0123456789a".into(),
            addresses: vec!["10.0.0.1".parse().unwrap()],
        };
        s.save(&r).unwrap();
        assert_eq!(s.load("net/1.abc"), Some(r.clone()));
        assert_eq!(s.all(), vec![r]);
        s.forget("net/1.abc").unwrap();
        s.forget("net/1.abc").unwrap();
        assert!(s.all().is_empty());
        s.defer_release(".hidden").unwrap();
        let p = s.pending_releases();
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].0, ".hidden");
        finish_release(&p[0].1).unwrap();
        assert!(s.pending_releases().is_empty());
    }
}
