#!/bin/bash
# podman.sh: rootful podman 4.3 (Debian) with the CNI backend, the conflist in $W/net.d (tortie,
# portmap, bandwidth with static rates) and the plugins in $W/bin, running containers from a local
# busybox root filesystem (no registry, no image): a one-shot container, then a web container with
# -p HOSTPORT:8080; the pod's address and routes, connectivity (host <-> pod, pod -> client through
# the host, HTTP to the pod and to its hostPort from the client), then `podman rm` (CNI DEL).
# podman runs under cnihost-exec.sh (a holder process), so the host side of CNI is $HOSTNS and all
# its state (storage mounts, /run, the libcni cache) is private and goes away with the holder.
source "$(dirname "${BASH_SOURCE[0]}")"/lib.sh
need podman runc unshare nsenter busybox wget iptables tc

mkdir -p "$W"/podman
make_rootfs "$W"/rootfs
cat > "$W"/containers.conf <<CONF
[containers]
netns = "private"
# no CAP_SYS_RESOURCE on some CI VMs: podman's default nofile/nproc limits cannot be set there
default_ulimits = ["nofile=4096:4096", "nproc=4096:4096"]

[network]
network_backend = "cni"
cni_plugin_dirs = ["$W/bin"]
network_config_dir = "$W/net.d"
default_network = "$NET"

[engine]
cgroup_manager = "cgroupfs"   # no systemd needed
events_logger = "file"
runtime = "runc"              # crun 1.8 refuses hybrid cgroup v1/v2 layouts
CONF
export CONTAINERS_CONF="$W"/containers.conf

HOLDER=
cleanup() {
  local rc=$?; set +e
  if [ -n "$HOLDER" ]; then
    "${P[@]}" rm -a -f -t 0 >/dev/null 2>&1
    kill "$HOLDER"; wait "$HOLDER" 2>/dev/null
  fi
  exit $rc
}
trap cleanup EXIT
"$HERE"/cnihost-exec.sh "$HOSTNS" sleep infinity & HOLDER=$!
retry 50 grep -qx sleep /proc/$HOLDER/comm || fail "cnihost-exec.sh did not start"
P=(nsenter -t "$HOLDER" -m -n podman --root "$W"/podman/storage --runroot "$W"/podman/run --tmpdir "$W"/podman/tmp)

"${P[@]}" info --format 'backend={{.Host.NetworkBackend}} cgroups={{.Host.CgroupsVersion}} runtime={{.Host.OCIRuntime.Name}}'
"${P[@]}" network ls
grep -qx "$NET tortie" <<<"$("${P[@]}" network ls --format '{{.Name}} {{.Driver}}')" \
  || fail "podman does not list network $NET with driver tortie (conflist rejected?)"

# 1. a one-shot container: ADD, the address it sees, DEL on exit
t0=$(date +%s%N)
OUT=$("${P[@]}" run --rm --network "$NET" --rootfs "$W"/rootfs /bin/sh -c 'ip -4 addr show eth0; ip route') \
  || fail "podman run --rm failed: $OUT"
report oneshot_ms $(( ($(date +%s%N)-t0)/1000000 ))
IP1=$(sed -nE 's/.*inet ([0-9.]+)\/32 .*/\1/p' <<<"$OUT")
pod_checks "$IP1" "$OUT"
[ -z "$(hostns ip route show proto 80)" ] || fail "one-shot container left a host route"

# 2. a web container with a published port
"${P[@]}" run -d --name web --network "$NET" --cap-add NET_RAW -p "$HOSTPORT:8080" --rootfs "$W"/rootfs \
  /bin/httpd -f -p 8080 -h /www >/dev/null || fail "podman run -d failed"
ID=$("${P[@]}" inspect web --format '{{.Id}}')
IP=$("${P[@]}" inspect web --format "{{(index .NetworkSettings.Networks \"$NET\").IPAddress}}")
report container_id "$ID"
pod_checks "$IP" "$("${P[@]}" exec web /bin/sh -c 'ip -4 addr show eth0; ip route')"
host_checks "$IP"
VETH=$(hostns ip route show proto 80 | awk '{print $3}')
connectivity "$IP" "${P[@]}" exec web
"${P[@]}" rm -f -t 0 web >/dev/null || fail "podman rm failed"
teardown_checks "$IP" "$VETH"
