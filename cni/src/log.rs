//! The plugin's log: one file, one line per event, each with the time and the container ID.
//! Nothing from stdin is ever written (a configuration may carry secrets); only what the plugin
//! decided and why. Logging never fails an invocation.

use std::io::Write;

/// An append-only log for one invocation.
pub struct Log {
    file: Option<std::fs::File>,
    container_id: String,
}

impl Log {
    /// Opens `path` for appending (creating its directory); an empty path or any error means
    /// no log.
    pub fn open(path: &str, container_id: &str) -> Log {
        let file = (!path.is_empty())
            .then(|| {
                let p = std::path::Path::new(path);
                if let Some(dir) = p.parent() {
                    let _ = std::fs::create_dir_all(dir);
                }
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .ok()
            })
            .flatten();
        Log {
            file,
            container_id: container_id.to_string(),
        }
    }

    /// Writes one line (a single `write` call, so lines of parallel invocations never mix).
    pub fn line(&self, msg: &str) {
        if let Some(mut f) = self.file.as_ref() {
            let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ");
            let line = format!(
                "{now} pid={} container={} {}\n",
                std::process::id(),
                self.container_id,
                msg.replace('\n', " ")
            );
            let _ = f.write_all(line.as_bytes());
        }
    }
}
