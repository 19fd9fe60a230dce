#!/bin/bash
# cri.sh: containerd 1.6 (Debian) and its built-in CRI plugin, driven over the CRI gRPC API by
# cri.py (a crictl stand-in), i.e. CNI is called exactly as for a kubelet pod. The conflist in $W/net.d
# (tortie, portmap, bandwidth taking its rates from the pod's annotations) and the plugins in $W/bin.
# RunPodSandbox (hostPort 8080 -> HOSTPORT, bandwidth annotations) = CNI ADD; an app container
# in the pod; the pod's address and routes, connectivity (host <-> pod, pod -> client through the
# host, HTTP to the pod and to its hostPort from the client); StopPodSandbox (DEL with the netns)
# and RemovePodSandbox (DEL without a netns); then the host side must be clean.
# containerd runs under cnihost-exec.sh, so the host side of CNI is $HOSTNS and its mounts, /run
# and the libcni cache are private; cri.py and ctr reach it over its socket in $W.
source "$(dirname "${BASH_SOURCE[0]}")"/lib.sh
need containerd ctr runc gcc unshare nsenter busybox wget iptables tc python3 dpkg
IMG=localhost/tortie-e2e/pause:1

# The CRI client: a venv with the CRI API stubs from PyPI, cached per Python and package version.
CRI_API=container-runtime-interface-api==2.0.1
if [ -z "${PY:-}" ]; then
  VENV="$CACHE/cri-venv-$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')-${CRI_API##*==}"
  if ! "$VENV"/bin/python -c 'import cri_api.v1.api_pb2_grpc' 2>/dev/null; then
    t0=$(date +%s%N)
    rm -rf "$VENV.tmp.$$"; python3 -m venv "$VENV.tmp.$$"
    "$VENV.tmp.$$"/bin/pip install -q --disable-pip-version-check "$CRI_API"
    rm -rf "$VENV"; mv "$VENV.tmp.$$" "$VENV"   # only bin/python is used from here on
    echo "built the CRI client venv in $(( ($(date +%s%N)-t0)/1000000 )) ms"
  fi
  PY="$VENV"/bin/python
fi
C=("$PY" "$HERE"/cri.py "$W"/containerd.sock)

# The sandbox image, built locally: busybox and a static 10-line pause, as a docker-archive.
mkdir -p "$W"/img/bin "$W"/podlogs
cat > "$W"/pause.c <<'SRC'
#include <signal.h>
#include <unistd.h>
#include <sys/wait.h>
static void die(int s){(void)s; _exit(0);}
static void reap(int s){(void)s; while(waitpid(-1,0,WNOHANG)>0);}
int main(void){ struct sigaction a={0}; a.sa_handler=die; sigaction(SIGINT,&a,0); sigaction(SIGTERM,&a,0);
  a.sa_handler=reap; a.sa_flags=SA_NOCLDSTOP; sigaction(SIGCHLD,&a,0); for(;;) pause(); }
SRC
gcc -static -O2 -s -o "$W"/img/pause "$W"/pause.c
make_rootfs "$W"/img
tar -C "$W"/img -cf "$W"/layer.tar .
python3 - "$W"/layer.tar "$W"/pause-image.tar "$IMG" "$(dpkg --print-architecture)" <<'PYEOF'
import hashlib, io, json, sys, tarfile
layer, out, name, arch = sys.argv[1:5]
data = open(layer, "rb").read()
cfg = json.dumps({"architecture": arch, "os": "linux", "config": {"Entrypoint": ["/pause"]},
                  "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(data).hexdigest()]}}).encode()
cfg_name = hashlib.sha256(cfg).hexdigest() + ".json"
mf = json.dumps([{"Config": cfg_name, "RepoTags": [name], "Layers": ["layer.tar"]}]).encode()
with tarfile.open(out, "w") as t:
    for n, b in (("layer.tar", data), (cfg_name, cfg), ("manifest.json", mf)):
        ti = tarfile.TarInfo(n); ti.size = len(b); t.addfile(ti, io.BytesIO(b))
PYEOF

cat > "$W"/containerd.toml <<CONF
version = 2
root = "$W/containerd/root"
state = "$W/containerd/state"
[grpc]
  address = "$W/containerd.sock"
[ttrpc]
  address = "$W/containerd.sock.ttrpc"
[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = "$W/containerd/opt"
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "$IMG"
    restrict_oom_score_adj = true   # the sandbox wants oom_score_adj=-998; needs CAP_SYS_RESOURCE
    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "overlayfs"
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "$W/bin"       # containerd's own cni-loopback network needs 'loopback' here too
      conf_dir = "$W/net.d"
      max_conf_num = 1
CONF

CTRD=
cleanup() {
  local rc=$? id; set +e
  if [ -n "$CTRD" ]; then
    for id in $("${C[@]}" pods 2>/dev/null | awk '{print $1}'); do "${C[@]}" stopp "$id" >/dev/null; "${C[@]}" rmp "$id"; done
    kill "$CTRD"; wait "$CTRD" 2>/dev/null
    [ $rc = 0 ] || { echo "----- containerd.log (tail) -----"; tail -n 40 "$W"/containerd.log; }
  fi
  exit $rc
}
trap cleanup EXIT
# containerd (and its shims and CNI plugins) run in HOSTNS; $! is containerd's own PID
"$HERE"/cnihost-exec.sh "$HOSTNS" containerd --config "$W"/containerd.toml > "$W"/containerd.log 2>&1 & CTRD=$!
retry 100 test -S "$W"/containerd.sock || fail "containerd did not start: $(tail -n 20 "$W"/containerd.log)"
retry 50 "${C[@]}" version >/dev/null 2>&1 || fail "CRI not answering: $(tail -n 20 "$W"/containerd.log)"
ctr -a "$W"/containerd.sock -n k8s.io images import "$W"/pause-image.tar >/dev/null
V=$("${C[@]}" version); head -3 <<<"$V"

export POD_LOG_DIR="$W"/podlogs
OUT=$("${C[@]}" runp web1 e2e "$HOSTPORT:8080") || fail "RunPodSandbox failed: $OUT"
echo "$OUT"
ID=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])' <<<"$OUT")
IP=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["ip"])' <<<"$OUT")
report runp_s "$(python3 -c 'import json,sys; print(json.load(sys.stdin)["runp_seconds"])' <<<"$OUT")"
report container_id "$ID"
report cri_ip "$IP"
CID=$("${C[@]}" create "$ID" "$IMG")                       # app container: /bin/sleep 3600
pod_checks "$IP" "$("${C[@]}" execsync "$CID" /bin/sh -c 'ip -4 addr show eth0; ip route')"
"${C[@]}" execsync "$CID" /bin/sh -c 'mkdir -p /srv && echo '"$MARK"' > /srv/index.html && httpd -p 8080 -h /srv' \
  || fail "starting httpd in the pod failed"
host_checks "$IP"
VETH=$(hostns ip route show proto 80 | awk '{print $3}')
connectivity "$IP" "${C[@]}" execsync "$CID"
"${C[@]}" rmc "$CID"
"${C[@]}" stopp "$ID" || fail "StopPodSandbox failed"       # CNI DEL #1 (netns + prevResult)
"${C[@]}" rmp "$ID" || fail "RemovePodSandbox failed"       # CNI DEL #2 (CNI_NETNS="", no prevResult)
report pods_left "$("${C[@]}" pods | wc -l)"
teardown_checks "$IP" "$VETH"
kill "$CTRD"; wait "$CTRD" 2>/dev/null || true; CTRD=
