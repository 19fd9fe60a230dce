//! Network namespaces by file descriptor.
//!
//! [`run_in`] runs a closure on a fresh thread that first moves itself into the namespace. The
//! calling thread never changes namespace, so an async runtime or an error path can never leave
//! a thread behind in the wrong one; sockets created inside (netlink, TCP) stay bound to the
//! namespace they were created in and can be used from any thread afterwards.
//!
//! This needs no `unsafe`: rustix's `setns` takes a `BorrowedFd`.

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::path::Path;

use rustix::thread::{LinkNameSpaceType, move_into_link_name_space};

/// An open network namespace (`/run/netns/NAME`, `/proc/PID/ns/net`, …).
#[derive(Debug)]
pub struct NetNs {
    file: File,
}

impl NetNs {
    /// Opens a namespace file; `NotFound` when it is gone.
    pub fn open(path: impl AsRef<Path>) -> io::Result<NetNs> {
        Ok(NetNs {
            file: File::open(path)?,
        })
    }

    /// The namespace of the calling thread.
    pub fn current() -> io::Result<NetNs> {
        NetNs::open("/proc/thread-self/ns/net")
    }

    /// The descriptor, e.g. for `IFLA_NET_NS_FD`.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Runs `f` inside this namespace on a scoped thread and returns its value. Fails with
    /// `InvalidInput` when the file is not a network namespace.
    pub fn run_in<T: Send>(&self, f: impl FnOnce() -> T + Send) -> io::Result<T> {
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    move_into_link_name_space(self.file.as_fd(), Some(LinkNameSpaceType::Network))
                        .map_err(io::Error::from)?;
                    Ok(f())
                })
                .join()
                .map_err(|_| io::Error::other("thread in the namespace panicked"))?
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_in_the_current_namespace_and_refuses_other_files() {
        let here = NetNs::current().unwrap();
        let inode = |p: &str| std::fs::metadata(p).map(|m| std::os::unix::fs::MetadataExt::ino(&m));
        let mine = inode("/proc/thread-self/ns/net").unwrap();
        let seen = here
            .run_in(|| inode("/proc/thread-self/ns/net").unwrap())
            .unwrap();
        assert_eq!(mine, seen);
        let not_ns = NetNs::open("/proc/self/status").unwrap();
        assert!(not_ns.run_in(|| ()).is_err());
    }
}
