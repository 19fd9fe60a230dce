#!/usr/bin/env bash
# Installing N remote-block routes (/26 via one next hop): `ip -batch` against the agent's
# reconciler (dump + plan + pipelined rtnetlink), side by side, alternating, in one throw-away
# namespace. Root only.
#   cargo build --release -p tortie-agent --example route_bench
#   agent/bench/routes.sh [N=100000] [ROUNDS=3]
set -euo pipefail
N=${1:-100000}
ROUNDS=${2:-3}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BENCH=${BENCH:-$ROOT/target/release/examples/route_bench}
[ -x "$BENCH" ] || { echo "missing $BENCH: cargo build --release -p tortie-agent --example route_bench" >&2; exit 1; }
NS=trb$$
W=$(mktemp -d /tmp/tortie-route-bench.XXXXXX)
cleanup() { ip netns del "$NS" 2>/dev/null || true; rm -rf "$W"; }
trap cleanup EXIT
ip netns add "$NS"
ip -n "$NS" link set lo up
ip -n "$NS" link add up0 type veth peer name up1
ip -n "$NS" addr add 198.18.0.1/16 dev up0
ip -n "$NS" link set up0 up
ip -n "$NS" link set up1 up
python3 - "$N" >"$W/batch" <<'PY'
import sys, ipaddress
n = int(sys.argv[1])
base = int(ipaddress.IPv4Address("10.0.0.0"))
for i in range(n):
    print(f"route add {ipaddress.IPv4Address(base + (i << 6))}/26 via 198.18.0.2 proto 80")
PY
# The same routes through one nexthop object, as the agent writes them: shown for reference.
{ echo "nexthop add id 7 via 198.18.0.2 dev up0 proto 80"; sed 's/via 198.18.0.2/nhid 7/' "$W/batch"; } >"$W/batch-nhid"
now() { date +%s.%N; }
echo "| round | ip -batch install (s) | tortie install (s) | ratio | ip -batch with nhid (s) | tortie dump (s) | tortie idle RSS (MB) | tortie peak RSS (MB) |"
echo "|---|---|---|---|---|---|---|---|"
for r in $(seq "$ROUNDS"); do
  # Each run starts after a pause, so that the kernel's deferred (RCU) freeing of the previous
  # run's routes is not charged to it.
  sleep 1; t0=$(now); ip -n "$NS" -batch "$W/batch"; t1=$(now)
  [ "$(ip -n "$NS" route show proto 80 | wc -l)" = "$N" ] || { echo "ip -batch did not install $N routes" >&2; exit 1; }
  ip -n "$NS" route flush proto 80
  sleep 1; t2=$(now); ip -n "$NS" -batch "$W/batch-nhid"; t3=$(now)
  [ "$(ip -n "$NS" route show proto 80 | grep -c nhid)" = "$N" ] || { echo "ip -batch (nhid) did not install $N routes" >&2; exit 1; }
  ip -n "$NS" nexthop flush >/dev/null
  sleep 1; out=$(ip netns exec "$NS" "$BENCH" "$N")
  [ "$(ip -n "$NS" route show proto 80 | wc -l)" = 0 ] || { echo "route_bench left routes" >&2; exit 1; }
  [ -z "$(ip -n "$NS" nexthop show)" ] || { echo "route_bench left nexthop objects" >&2; exit 1; }
  python3 - "$t0" "$t1" "$out" "$r" "$t2" "$t3" <<'PY'
import json, sys
t0, t1, out, r = float(sys.argv[1]), float(sys.argv[2]), json.loads(sys.argv[3]), sys.argv[4]
nhid = float(sys.argv[6]) - float(sys.argv[5])
ipb = t1 - t0
assert out["converged"]
print(f"| {r} | {ipb:.3f} | {out['install_s']:.3f} | {out['install_s'] / ipb:.2f} | {nhid:.3f} | {out['dump_s']:.3f} | {out['idle_rss_mb']} | {out['peak_rss_mb']} |")
PY
done
