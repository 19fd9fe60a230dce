#!/bin/bash
# cnihost-exec.sh NETNS CMD [ARG...]
# (Adapted from the team's reference notes on real CNI clients; used by e2e/tests/cni_runtimes.rs.)
#
# Like `ip netns exec NETNS CMD`, but usable for container runtimes. CMD (and every process it
# starts: podman, conmon, containerd, shims, CNI plugins, iptables) runs with NETNS as its network
# namespace, so NETNS is the "host side" of CNI. CMD also gets a private mount namespace (a slave of
# the root one: mounts made inside never propagate out) in which
#   * /sys is a fresh sysfs of NETNS (so /sys/class/net lists NETNS's links), and the mounts under
#     the old /sys (the cgroup hierarchies) are carried over: `ip netns exec` drops them, and runc
#     cannot create containers without them;
#   * /run, /var/lib/cni and /etc/cni/net.d are empty tmpfs, so pod netns files (/run/netns/*),
#     runtime state (/run/runc, /run/containerd/...), the libcni result cache and lock files stay
#     private, and disappear with the mount namespace when its last process exits.
# NETNS must exist (`ip netns add NETNS`). CMD cannot open NETNS or other root-namespace netns by
# name (/run/netns is private); it is already in NETNS, and netns it creates with `ip netns add`
# are private to it. Environment variables pass through unchanged.
set -euo pipefail
NS=${1:?usage: cnihost-exec.sh NETNS CMD [ARG...]}; shift
[ $# -gt 0 ] || { echo "usage: cnihost-exec.sh NETNS CMD [ARG...]" >&2; exit 2; }

if [ -z "${_CNIHOST_STAGE:-}" ]; then
  [ -e "/run/netns/$NS" ] || { echo "cnihost-exec: netns '$NS' not found (ip netns add $NS)" >&2; exit 1; }
  SELF=$(readlink -f "${BASH_SOURCE[0]}")
  # neither unshare (no --fork) nor nsenter (no pid ns) forks: CMD keeps this process's PID
  _CNIHOST_STAGE=1 exec unshare --mount --propagation slave -- \
    nsenter --net="/run/netns/$NS" -- "$BASH" "$SELF" "$NS" "$@"
fi
unset _CNIHOST_STAGE

# now in NETNS and in a new mount namespace
mount -t tmpfs -o mode=755 cnihost-run /run
mkdir -p /run/netns /run/lock /run/.keep
# remember the mounts directly under /sys (cgroup tmpfs ...) before replacing /sys
sys_id=$(awk '$5 == "/sys" {id=$1} END {print id}' /proc/self/mountinfo)
mapfile -t subs < <(awk -v p="$sys_id" '$2 == p {print $5}' /proc/self/mountinfo)
for i in "${!subs[@]}"; do
  subs[$i]=$(printf '%b' "${subs[$i]}"); mkdir /run/.keep/$i; mount --rbind "${subs[$i]}" /run/.keep/$i
done
umount -l /sys 2>/dev/null || true
mount -t sysfs "cnihost-$NS" /sys          # a sysfs mounted from inside NETNS describes NETNS
for i in "${!subs[@]}"; do
  if [ -d "${subs[$i]}" ]; then mount --move /run/.keep/$i "${subs[$i]}"; else umount -l /run/.keep/$i; fi
  rmdir /run/.keep/$i
done
rmdir /run/.keep
mkdir -p /var/lib/cni                        # libcni would create it anyway
mount -t tmpfs -o mode=700 cnihost-cni /var/lib/cni
if [ -d /etc/cni/net.d ]; then mount -t tmpfs -o mode=755 cnihost-netd /etc/cni/net.d; fi
ip link set lo up
exec "$@"
