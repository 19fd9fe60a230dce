#!/usr/bin/env bash
# tortie-agent's memory: idle (BGP on, no routes), then with N routes learned over BGP from a
# tortie-bgpd peer and installed in the kernel; also the time from the agent's start to all N
# routes in its kernel. Throw-away namespaces only. Root only.
#   cargo build --release -p tortie-agent -p tortie-bgpd -p tortie-ctl
#   agent/bench/agent_rss.sh [N=100000]
set -euo pipefail
N=${1:-100000}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BIN=${BIN:-$ROOT/target/release}
for b in tortie-agent tortie-bgpd tortiectl; do
  [ -x "$BIN/$b" ] || { echo "missing $BIN/$b: cargo build --release -p tortie-agent -p tortie-bgpd -p tortie-ctl" >&2; exit 1; }
done
A=tab$$a; B=tab$$b; W=$(mktemp -d /tmp/tortie-agent-rss.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  ip netns del "$A" 2>/dev/null || true; ip netns del "$B" 2>/dev/null || true; rm -rf "$W"
}
trap cleanup EXIT
ip netns add "$A"; ip netns add "$B"
ip link add "${A}x" netns "$A" type veth peer name "${B}x" netns "$B"
ip -n "$A" addr add 198.18.0.1/24 dev "${A}x"; ip -n "$B" addr add 198.18.0.2/24 dev "${B}x"
for n in "$A" "$B"; do ip -n "$n" link set lo up; done
ip -n "$A" link set "${A}x" up; ip -n "$B" link set "${B}x" up
DS="sqlite://$W/ds.db"
cat >"$W/res.yaml" <<YAML
apiVersion: tortie.io/v1
kind: IPPool
metadata: {name: pool}
spec: {cidr: 10.244.0.0/16}
---
apiVersion: tortie.io/v1
kind: BGPPeer
metadata: {name: feeder}
spec: {peerIP: 198.18.0.2, asNumber: 65001}
YAML
"$BIN/tortiectl" --datastore "$DS" apply -f "$W/res.yaml" >/dev/null
python3 - "$N" >"$W/bgpd.toml" <<'PY'
import sys, ipaddress
n = int(sys.argv[1])
print('[speaker]\nasn = 65001\nrouter_id = "198.18.0.2"\nlisten = ["0.0.0.0:179"]\ngraceful_restart_time = 0\n')
print('[[peer]]\naddress = "198.18.0.1"\nasn = 64512\nfamilies = ["ipv4"]\n')
base = int(ipaddress.IPv4Address("10.0.0.0"))
for i in range(n):
    print(f'[[originate]]\nprefix = "{ipaddress.IPv4Address(base + (i << 6))}/26"\n')
PY
rss() { awk -v f="$2" '$1 == f {print $2/1024}' /proc/"$1"/status; }
ip netns exec "$A" "$BIN/tortie-agent" --datastore "$DS" --node bench --ip 198.18.0.1/24 --as 64512 \
  --socket "$W/agent.sock" --cni-data-dir "$W/cni" 2>"$W/agent.log" &
AGENT=$!; PIDS+=("$AGENT")
sleep 3
IDLE=$(rss "$AGENT" VmRSS:)
T0=$(date +%s.%N)
ip netns exec "$B" "$BIN/tortie-bgpd" --config "$W/bgpd.toml" 2>"$W/bgpd.log" &
PIDS+=("$!")
while [ "$(ip -n "$A" route show proto 80 | wc -l)" -lt "$N" ]; do sleep 0.05; done
T1=$(date +%s.%N)
sleep 2
echo "| routes | agent idle RSS (MB) | agent RSS with routes (MB) | agent peak RSS (MB) | feeder start → all in kernel (s) |"
echo "|---|---|---|---|---|"
echo "| $N | $IDLE | $(rss "$AGENT" VmRSS:) | $(rss "$AGENT" VmHWM:) | $(python3 -c "print(f'{$T1 - $T0:.2f}')") |"
