#!/usr/bin/env bash
# BGP receive and transit benchmark, side by side in one run (docs/benchmarks.md).
#
#   bgpd/bench/bench.sh [N]          (root; N /26 prefixes, default 100000)
#
# gobgpd (Debian) injects N /26 routes over a veth pair into each receiver in turn: tortie-bgpd,
# BIRD 2, FRR 8 (bgpd without FIB, as tortie-bgpd and BIRD here). Per receiver: time from the
# first UPDATE on the wire to "all N counted" (polled), established→all, and peak RSS (VmHWM).
# Transit: injector → speaker → monitor (a second gobgpd); time from the first UPDATE reaching
# the speaker to all N counted at the monitor. "sender_wire_s" shows how long the injector took to
# put its UPDATEs on the wire, i.e. whether it is the bottleneck. "receiver CPU" is the CPU time
# of all the receiver's threads while it was measured (the polls' answers included): it is less
# disturbed than the wall-clock times by whatever else runs on the machine.
#
# CASES (default "tortie bird frr transit") picks the cases to run, e.g. CASES="tortie bird"
# for quick repeated comparisons. TORTIE_BGPD=PATH benchmarks another build of tortie-bgpd.
#
# Safety: everything runs in namespaces named tbench<pid>-*, removed on exit with the processes
# started here (by PID). Nothing is configured in the root namespace.
set -euo pipefail
N=${1:-100000}
CASES=${CASES:-tortie bird frr transit}
want() { [[ " $CASES " == *" $1 "* ]]; }
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BIN=${TORTIE_BGPD:-$ROOT/target/release/tortie-bgpd}
[ -x "$BIN" ] || (cd "$ROOT" && cargo build --release -q -p tortie-bgpd)
W=$(mktemp -d /tmp/tortie-bgp-bench.XXXXXX); chmod 755 "$W"
P=tbench$$; INJ=$P-inj; RCV=$P-rcv; MON=$P-mon
PIDS=()
cleanup() {
  set +e
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  for ns in $INJ $RCV $MON; do
    for p in $(ip netns pids $ns 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
    ip netns del $ns 2>/dev/null
  done
  rm -rf "$W"
}
trap cleanup EXIT
for ns in $INJ $RCV $MON; do ip netns add $ns; ip -n $ns link set lo up; done
ip link add vi netns $INJ type veth peer name vr netns $RCV
ip link add vm netns $MON type veth peer name vs netns $RCV
ip -n $INJ addr add 198.18.10.1/24 dev vi; ip -n $RCV addr add 198.18.10.2/24 dev vr
ip -n $MON addr add 198.18.11.1/24 dev vm; ip -n $RCV addr add 198.18.11.2/24 dev vs
for l in "$INJ vi" "$RCV vr" "$MON vm" "$RCV vs"; do set -- $l; ip -n $1 link set $2 up; done
cd "$W"

python3 "$HERE/gen_mrt.py" "$N" routes.mrt 198.18.10.1
cat > inj.toml <<T
[global.config]
  as = 65001
  router-id = "198.18.10.1"
  local-address-list = ["198.18.10.1"]
[[neighbors]]
  [neighbors.config]
    neighbor-address = "198.18.10.2"
    peer-as = 64512
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv4-unicast"
T
ip netns exec $INJ gobgpd -f inj.toml --api-hosts 127.0.0.1:50051 --log-level warn > inj.log 2>&1 &
PIDS+=($!); sleep 2
ip netns exec $INJ gobgp -p 50051 mrt inject global routes.mrt
sleep 1
echo "injector RIB: $(ip netns exec $INJ gobgp -p 50051 global rib summary -a ipv4 | tr -s ' ')"

results=()
capture() {  # capture NAME: starts tcpdump on the receiver's side before the receiver starts
  ip netns exec $RCV tcpdump -U --immediate-mode -i vr -w $1.pcap -s 128 'tcp port 179' > /dev/null 2>&1 &
  TCPDUMP=$!; sleep 1
}
run() {  # run NAME ESTABLISHED_CMD COUNT_CMD RECEIVER_CMD...   (after capture NAME)
  # The poller starts before the receiver: a fast receiver can be done in a fraction of a second,
  # before a poller started afterwards would look (the first version of this script had that race).
  local name=$1 est=$2 cnt=$3 tp=$TCPDUMP; shift 3
  python3 "$HERE/measure.py" "$N" "$est" "$cnt" $name.pcap $tp "@$W/$name.rpid" 198.18.10.1 > $name.json & local mp=$!
  sleep 0.3
  "$@" > $name.log 2>&1 & local pid=$!; PIDS+=($pid); echo $pid > "$W/$name.rpid"
  wait $mp || true
  local out; out=$(cat $name.json)
  echo "$name: $out"
  results+=("$name $out")
  kill "$pid" 2>/dev/null || true; sleep 2
}

# tortie-bgpd
if want tortie; then
cat > tortie.toml <<T
[speaker]
asn = 64512
router_id = "198.18.10.2"
listen = ["0.0.0.0:179"]
graceful_restart_time = 0
[[peer]]
address = "198.18.10.1"
asn = 65001
families = ["ipv4"]
T
capture tortie-bgpd
# Polled with tortie-bgpd's own query client, as BIRD is polled with birdc.
run tortie-bgpd "$BIN query $W/t.sock status" "$BIN query $W/t.sock count | tr -dc 0-9" \
  ip netns exec $RCV "$BIN" --config tortie.toml --control $W/t.sock
fi

# BIRD 2
if want bird; then
cat > bird.conf <<T
router id 198.18.10.2;
protocol device { }
protocol bgp inj { local 198.18.10.2 as 64512; neighbor 198.18.10.1 as 65001; ipv4 { import all; export none; }; }
T
capture bird
run bird "birdc -s $W/bird.ctl show protocols inj" "birdc -s $W/bird.ctl show route count | awk '/routes/{print \$1; exit}'" \
  ip netns exec $RCV bird -f -c bird.conf -s $W/bird.ctl -P $W/bird.pid
fi

# FRR 8 (bgpd -n: no FIB, like the others here)
if want frr; then
chown frr:frr "$W"
F="-z $W/zserv.api --vty_socket $W -u frr -g frr"
printf 'hostname rcv\n' > zebra.conf
cat > bgpd.conf <<T
route-map ALLOW permit 10
router bgp 64512
 bgp router-id 198.18.10.2
 neighbor 198.18.10.1 remote-as 65001
 address-family ipv4 unicast
  neighbor 198.18.10.1 route-map ALLOW in
 exit-address-family
T
ip netns exec $RCV /usr/lib/frr/zebra $F -i $W/zebra.pid -f zebra.conf > zebra.log 2>&1 & ZP=$!; PIDS+=($ZP); sleep 1
capture frr-bgpd
run frr-bgpd "vtysh --vty_socket $W -c 'show bgp neighbors 198.18.10.1 json' | grep -o 'bgpState.:.Established'" \
  "vtysh --vty_socket $W -c 'show bgp ipv4 unicast summary json' | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"peers\"][\"198.18.10.1\"][\"pfxRcd\"])'" \
  ip netns exec $RCV /usr/lib/frr/bgpd $F -i $W/bgpd.pid -f bgpd.conf -n
kill $ZP 2>/dev/null || true
fi

# Transit: injector -> speaker (tortie-bgpd or BIRD) -> monitor (gobgpd)
if want transit; then
cat > mon.toml <<T
[global.config]
  as = 65009
  router-id = "198.18.11.1"
  local-address-list = ["198.18.11.1"]
[[neighbors]]
  [neighbors.config]
    neighbor-address = "198.18.11.2"
    peer-as = 64512
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv4-unicast"
T
transit() {  # transit NAME START_CMD...
  local name=$1; shift
  ip netns exec $MON gobgpd -f mon.toml --api-hosts 127.0.0.1:50052 --log-level warn > mon-$name.log 2>&1 & local mp=$!; PIDS+=($mp); sleep 1
  capture transit-$name; local tp=$TCPDUMP
  python3 "$HERE/measure.py" "$N" "ip netns exec $MON gobgp -p 50052 neighbor 198.18.11.2 | grep -io 'BGP state = established' | sed 's/.*/Established/'" \
     "ip netns exec $MON gobgp -p 50052 global rib summary -a ipv4 | awk '/Destination/{print \$2}' | tr -d ,"  transit-$name.pcap $tp "@$W/transit-$name.rpid" 198.18.10.1 > transit-$name.json & local wp=$!
  sleep 0.3
  "$@" > transit-$name.log 2>&1 & local sp=$!; PIDS+=($sp); echo $sp > "$W/transit-$name.rpid"
  wait $wp || true
  local out; out=$(cat transit-$name.json)
  echo "transit $name: $out"
  results+=("transit-$name $out")
  kill $sp $mp 2>/dev/null || true; sleep 2
}
cat > tortie-transit.toml <<T
[speaker]
asn = 64512
router_id = "198.18.10.2"
listen = ["0.0.0.0:179"]
graceful_restart_time = 0
[[peer]]
address = "198.18.10.1"
asn = 65001
families = ["ipv4"]
[[peer]]
address = "198.18.11.1"
asn = 65009
families = ["ipv4"]
T
transit tortie-bgpd ip netns exec $RCV "$BIN" --config tortie-transit.toml
cat > bird-transit.conf <<T
router id 198.18.10.2;
protocol device { }
protocol bgp inj { local 198.18.10.2 as 64512; neighbor 198.18.10.1 as 65001; ipv4 { import all; export none; }; }
protocol bgp mon { local 198.18.11.2 as 64512; neighbor 198.18.11.1 as 65009; ipv4 { import none; export all; }; }
T
transit bird ip netns exec $RCV bird -f -c bird-transit.conf -s $W/bird2.ctl -P $W/bird2.pid
fi

echo
echo "| case | first UPDATE → all (s) | established → all (s) | injector on the wire (s) | receiver CPU (s) | peak RSS (MB) |"
echo "|---|---|---|---|---|---|"
for r in "${results[@]}"; do
  name=${r%% *}; json=${r#* }
  python3 -c "import json,sys; d=json.loads(sys.argv[2]); print(f\"| {sys.argv[1]} | {d.get('first_update_to_all_s')} | {d.get('established_to_all_s')} | {d.get('sender_wire_s')} | {d.get('cpu_s')} | {d.get('peak_rss_kb',0)/1024:.1f} |\")" "$name" "$json"
done
