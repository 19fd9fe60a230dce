//! End-to-end tests of tortie with real clients; the code is in `tests/` (e.g.
//! `tests/cni_runtimes.rs`: the CNI plugin under cnitool, podman and containerd's CRI, driving the
//! scripts in `cni/`). This library is empty.
