#!/usr/bin/env bash
# CNI ADD/DEL latency, side by side in one run: Debian's ptp + host-local against tortie (with
# tortie-agent serving IPAM from a SQLite datastore). Calls are interleaved (ptp, tortie, ptp, …)
# so both see the same machine load. Everything runs in a throw-away "host" namespace; pods are
# namespaces made for each call. Root only.
#   cargo build --release -p tortie-cni -p tortie-agent -p tortie-ctl
#   cni/bench/bench.sh [N=200]
set -euo pipefail
N=${1:-200}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BIN=${BIN:-$ROOT/target/release}
for b in tortie tortie-agent tortiectl; do
  [ -x "$BIN/$b" ] || { echo "missing $BIN/$b: cargo build --release -p tortie-cni -p tortie-agent -p tortie-ctl" >&2; exit 1; }
done
[ -x /usr/lib/cni/ptp ] || { echo "missing /usr/lib/cni/ptp: apt-get install containernetworking-plugins" >&2; exit 1; }
W=$(mktemp -d /tmp/tortie-cni-bench.XXXXXX)
HOST=tcb$$h
AGENT=
cleanup() {
  [ -n "$AGENT" ] && kill "$AGENT" 2>/dev/null && wait "$AGENT" 2>/dev/null || true
  for ns in $(ip netns list | awk -v p="tcb$$" 'index($1, p) == 1 {print $1}'); do ip netns del "$ns"; done
  rm -rf "$W"
}
trap cleanup EXIT
ip netns add "$HOST"
ip -n "$HOST" link set lo up
ip -n "$HOST" link add up0 type veth peer name up1
ip -n "$HOST" link set up0 up && ip -n "$HOST" link set up1 up
ip -n "$HOST" addr add 198.18.100.1/24 dev up0
ip -n "$HOST" route add default via 198.18.100.254 dev up0 onlink
ip netns exec "$HOST" sysctl -qw net.ipv4.ip_forward=1

DS="sqlite://$W/ds.db"
cat >"$W/pool.yaml" <<YAML
apiVersion: tortie.io/v1
kind: IPPool
metadata: {name: bench}
spec: {cidr: 10.244.0.0/16, blockSize: 26}
YAML
"$BIN/tortiectl" --datastore "$DS" apply -f "$W/pool.yaml" >/dev/null
ip netns exec "$HOST" "$BIN/tortie-agent" --datastore "$DS" --node bench --socket "$W/agent.sock" \
  --cni-data-dir "$W/cni" 2>"$W/agent.log" &
AGENT=$!
for _ in $(seq 100); do [ -S "$W/agent.sock" ] && break; sleep 0.05; done
[ -S "$W/agent.sock" ] || { cat "$W/agent.log"; exit 1; }

ip netns exec "$HOST" python3 - "$N" "$W" "$BIN" "tcb$$" <<'PY'
import json, os, statistics, subprocess, sys, time
n, w, bin_dir, prefix = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
plugins = {
    "ptp + host-local": ("/usr/lib/cni/ptp", {
        "cniVersion": "1.0.0", "name": "bench", "type": "ptp", "mtu": 1500,
        "ipam": {"type": "host-local", "dataDir": f"{w}/host-local",
                 "ranges": [[{"subnet": "10.245.0.0/16"}]], "routes": [{"dst": "0.0.0.0/0"}]}}),
    "tortie": (f"{bin_dir}/tortie", {
        "cniVersion": "1.0.0", "name": "bench", "type": "tortie",
        "agentSocket": f"{w}/agent.sock", "dataDir": f"{w}/cni", "logFile": f"{w}/cni.log",
        "ipam": {"type": "tortie-ipam"}}),
}
times = {k: {"ADD": [], "DEL": []} for k in plugins}
def call(path, cmd, cid, netns, conf):
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "CNI_COMMAND": cmd, "CNI_CONTAINERID": cid,
           "CNI_NETNS": netns, "CNI_IFNAME": "eth0", "CNI_PATH": "/usr/lib/cni",
           "CNI_ARGS": f"IgnoreUnknown=1;K8S_POD_NAMESPACE=bench;K8S_POD_NAME={cid}"}
    t0 = time.perf_counter_ns()
    r = subprocess.run([path], input=json.dumps(conf).encode(), env=env, capture_output=True)
    dt = (time.perf_counter_ns() - t0) / 1e6
    if r.returncode != 0:
        sys.exit(f"{path} {cmd} failed: {r.stdout.decode()} {r.stderr.decode()}")
    return dt, r.stdout
warm = 5
for i in range(n + warm):
    for name, (path, conf) in plugins.items():
        ns = f"{prefix}p{i % 4}"
        subprocess.run(["ip", "netns", "add", ns], check=True)
        cid = f"c{i}"
        dt_add, out = call(path, "ADD", cid, f"/run/netns/{ns}", conf)
        prev = dict(conf, prevResult=json.loads(out))
        dt_del, _ = call(path, "DEL", cid, f"/run/netns/{ns}", prev)
        subprocess.run(["ip", "netns", "del", ns], check=True)
        if i >= warm:
            times[name]["ADD"].append(dt_add)
            times[name]["DEL"].append(dt_del)
def pct(v, q):
    v = sorted(v)
    return v[min(len(v) - 1, int(q * len(v)))]
print(f"| plugin | n | ADD p50 (ms) | ADD p99 (ms) | DEL p50 (ms) | DEL p99 (ms) |")
print(f"|---|---|---|---|---|---|")
for name, t in times.items():
    print(f"| {name} | {len(t['ADD'])} | {pct(t['ADD'], .5):.2f} | {pct(t['ADD'], .99):.2f} | "
          f"{pct(t['DEL'], .5):.2f} | {pct(t['DEL'], .99):.2f} |")
a = pct(times["tortie"]["ADD"], .5) / pct(times["ptp + host-local"]["ADD"], .5)
d = pct(times["tortie"]["DEL"], .5) / pct(times["ptp + host-local"]["DEL"], .5)
print(f"\ntortie / ptp, median: ADD {a:.2f}x, DEL {d:.2f}x")
PY
