#!/bin/sh
# capture.sh [OUTDIR] -- record real BGP messages from gobgpd, BIRD 2 and FRR bgpd as hex vectors.
#
# Everything happens inside two throw-away network namespaces created here (tw-<pid>-a with the
# daemon under test, tw-<pid>-b with a small Python recorder) joined by a veth pair:
#   tw-<pid>-a  veth tw<pid>a  198.18.0.1/24  2001:db8:18::1/64
#   tw-<pid>-b  veth tw<pid>b  198.18.0.2/24  2001:db8:18::2/64
# The root namespace's addresses, routes and sysctls are never touched. The namespaces and every
# daemon started here (killed by PID) are removed on exit, also on failure.
#
# The recorder is the active side: it connects to the (passive) daemon, sends a canned OPEN (its
# capabilities are chosen per session: MP IPv4/IPv6, route refresh, graceful restart, optionally
# 4-octet AS, ADD-PATH receive, extended next hop), answers with KEEPALIVEs, and writes every
# message it receives, one hex line each. The script then makes the daemon withdraw a route in
# each family and finally shut the session down with an RFC 8203 message, so that one session
# yields OPEN, KEEPALIVE, UPDATEs, End-of-RIBs, withdrawals and a Cease NOTIFICATION.
# Needs root and: apt-get install -y gobgpd bird2 frr python3.
set -eu

HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${1:-$HERE}
NSA=tw-$$-a
NSB=tw-$$-b
VA=tw$$a
VB=tw$$b
W=$(mktemp -d /tmp/tw-capture.XXXXXX)
PIDS=""

cleanup() {
    for p in $PIDS; do kill "$p" 2>/dev/null || true; done
    for p in $PIDS; do
        i=0
        while kill -0 "$p" 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
        kill -9 "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    ip netns del "$NSA" 2>/dev/null || true
    ip netns del "$NSB" 2>/dev/null || true
    if [ "${KEEP:-0}" = 1 ]; then echo "work dir kept: $W"; else rm -rf "$W"; fi
}
trap cleanup EXIT
trap 'exit 1' INT TERM

ip netns add "$NSA"
ip netns add "$NSB"
ip link add "$VA" netns "$NSA" type veth peer name "$VB" netns "$NSB"
ip -n "$NSA" addr add 198.18.0.1/24 dev "$VA"
ip -n "$NSB" addr add 198.18.0.2/24 dev "$VB"
ip -n "$NSA" addr add 2001:db8:18::1/64 dev "$VA" nodad
ip -n "$NSB" addr add 2001:db8:18::2/64 dev "$VB" nodad
for n in "$NSA" "$NSB"; do ip -n "$n" link set lo up; done
ip -n "$NSA" link set "$VA" up
ip -n "$NSB" link set "$VB" up
sleep 1 # link-local addresses

# ---- the recorder ------------------------------------------------------------------------------
cat > "$W/recorder.py" <<'EOF'
import socket, struct, sys, threading, time
# recorder.py OUT ASN ASN4(0|1) ADDPATH(none|v4|v6|both) ENH(0|1) LOCAL_ADDR PEER_ADDR
out, asn, asn4, addpath, enh = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1", sys.argv[4], sys.argv[5] == "1"
local, peer = sys.argv[6], sys.argv[7]
def cap(code, val): return bytes([code, len(val)]) + val
caps = cap(1, struct.pack("!HBB", 1, 0, 1)) + cap(1, struct.pack("!HBB", 2, 0, 1)) + cap(2, b"")
if enh: caps += cap(5, struct.pack("!HHH", 1, 1, 2))
caps += cap(64, struct.pack("!HHBBHBB", 120, 1, 1, 0, 2, 1, 0))
if asn4: caps += cap(65, struct.pack("!I", asn))
fams = {"none": [], "v4": [1], "v6": [2], "both": [1, 2]}[addpath]
if fams: caps += cap(69, b"".join(struct.pack("!HBB", f, 1, 1) for f in fams))
params = bytes([2, len(caps)]) + caps
my_as = asn if asn <= 0xFFFF else 23456
body = struct.pack("!BHH4sB", 4, my_as, 90, socket.inet_aton("198.18.0.2"), len(params)) + params
msg = lambda t, b: b"\xff" * 16 + struct.pack("!HB", 19 + len(b), t) + b
lock = threading.Lock()
def recv(s, n):
    b = b""
    while len(b) < n:
        try: c = s.recv(n - len(b))
        except OSError: return None
        if not c: return None
        b += c
    return b
def session():
    """Connects and exchanges OPENs; returns (socket, peer OPEN) or None (e.g. daemon not ready)."""
    try:
        s = socket.create_connection((peer, 179), timeout=2, source_address=(local, 0))
    except OSError:
        return None
    s.sendall(msg(1, body))
    h = recv(s, 19)
    if h is None or h[18] != 1: s.close(); return None
    rest = recv(s, struct.unpack("!H", h[16:18])[0] - 19)
    if rest is None: s.close(); return None
    s.sendall(msg(4, b""))
    s.settimeout(None)
    return s, h + rest
for _ in range(100):
    r = session()
    if r: break
    time.sleep(0.3)
else: sys.exit("recorder: no session")
s, first = r
def send(b):
    with lock: s.sendall(b)
def keepalive():
    while True:
        time.sleep(5)
        try: send(msg(4, b""))
        except OSError: return
threading.Thread(target=keepalive, daemon=True).start()
names = {1: "OPEN", 2: "UPDATE", 3: "NOTIFICATION", 4: "KEEPALIVE", 5: "ROUTE-REFRESH"}
with open(out, "w") as f:
    f.write(first.hex() + "\n")
    print(f"recorder: OPEN {len(first)} bytes", flush=True)
    while True:
        h = recv(s, 19)
        if h is None: break
        ln, t = struct.unpack("!HB", h[16:19])
        rest = recv(s, ln - 19) if ln > 19 else b""
        if rest is None: break
        m = h + rest
        f.write(m.hex() + "\n"); f.flush()
        print(f"recorder: {names.get(t, t)} {ln} bytes", flush=True)
        if t == 3: break
s.close()
EOF

# ---- splits a recorded stream into named vectors -----------------------------------------------
cat > "$W/split.py" <<'EOF'
import struct, sys, os
# split.py STREAM OUTDIR PREFIX : names each message by kind; the first of each kind is kept
stream, outdir, prefix = sys.argv[1], sys.argv[2], sys.argv[3]
os.makedirs(outdir, exist_ok=True)
seen = {}
def kind(m):
    t = m[18]
    if t == 1: return "open"
    if t == 3: return "notification"
    if t == 4: return "keepalive"
    if t == 5: return "route_refresh_v%d" % (4 if m[20] == 1 else 6)
    wl = struct.unpack("!H", m[19:21])[0]
    al = struct.unpack("!H", m[21 + wl:23 + wl])[0]
    attrs = m[23 + wl:23 + wl + al]
    nlri = m[23 + wl + al:]
    codes, i, mp = [], 0, {}
    while i < len(attrs):
        fl, code = attrs[i], attrs[i + 1]
        if fl & 0x10: ln = struct.unpack("!H", attrs[i + 2:i + 4])[0]; v = attrs[i + 4:i + 4 + ln]; i += 4 + ln
        else: ln = attrs[i + 2]; v = attrs[i + 3:i + 3 + ln]; i += 3 + ln
        codes.append(code); mp[code] = v
    if wl == 0 and al == 0 and not nlri: return "eor_v4"
    if codes == [15] and len(mp[15]) == 3: return "eor_v6" if mp[15][:2] == b"\x00\x02" else "eor_afi%d" % mp[15][1]
    if wl: return "withdraw_v4"
    if 15 in mp and not nlri and 14 not in mp: return "withdraw_v6"
    if 14 in mp: return "update_v6" if mp[14][:2] == b"\x00\x02" else "update_v4_mp"
    return "update_v4"
for line in open(stream):
    m = bytes.fromhex(line.strip())
    k = kind(m)
    n = seen.get(k, 0); seen[k] = n + 1
    name = k if n == 0 else f"{k}_{n + 1}"
    with open(os.path.join(outdir, f"{prefix}{name}.hex"), "w") as f: f.write(m.hex() + "\n")
print(" ".join(f"{prefix}{k}x{v}" for k, v in seen.items()))
EOF

# ---- drops vectors that are byte-identical to another one of the same implementation -----------
cat > "$W/dedup.py" <<'EOF'
import os, sys
# dedup.py DIR : keeps, among identical files, the one with the shortest name (no session prefix)
d = sys.argv[1]
kept = {}
for name in sorted(os.listdir(d), key=lambda n: (n.count("_") > 1 and n.split("_")[0] in ("as2", "addpath", "enh"), len(n), n)):
    if not name.endswith(".hex"): continue
    data = open(os.path.join(d, name)).read()
    if data in kept: os.remove(os.path.join(d, name))
    else: kept[data] = name
EOF

# Foreground helpers. Background processes are started with a direct `ip netns exec` (which execs
# the command), so that $! is the daemon's own PID and cleanup can kill it.
A() { ip netns exec "$NSA" "$@"; }
B() { ip netns exec "$NSB" "$@"; }

# record NAME ASN ASN4 ADDPATH ENH [LOCAL PEER] : runs the recorder in the background, PID in $RP
record() {
    ip netns exec "$NSB" timeout 60 python3 "$W/recorder.py" "$W/$1.stream" "$2" "$3" "$4" "$5" \
        "${6:-198.18.0.2}" "${7:-198.18.0.1}" > "$W/$1.recorder.log" 2>&1 &
    RP=$!
    PIDS="$PIDS $RP"
}
# finish NAME IMPL PREFIX : waits for the recorder (the daemon ends the session, or timeout 60)
# and splits the stream
finish() {
    wait "$RP" || true
    cat "$W/$1.recorder.log"
    python3 "$W/split.py" "$W/$1.stream" "$OUT/$2" "$3"
}

# ---- 1. gobgpd 3.10: eBGP, AS 4200000001 -------------------------------------------------------
gobgp_session() { # NAME ASN4 ADDPATH
    cat > "$W/gobgpd.toml" <<EOF
[global.config]
  as = 4200000001
  router-id = "198.18.0.1"
  local-address-list = ["198.18.0.1"]
[[neighbors]]
  [neighbors.config]
    neighbor-address = "198.18.0.2"
    peer-as = 65010
  [neighbors.transport.config]
    passive-mode = true
  [neighbors.graceful-restart.config]
    enabled = true
    restart-time = 120
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv4-unicast"
    [neighbors.afi-safis.mp-graceful-restart.config]
      enabled = true
    [neighbors.afi-safis.add-paths.config]
      send-max = $3
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv6-unicast"
    [neighbors.afi-safis.mp-graceful-restart.config]
      enabled = true
EOF
    ip netns exec "$NSA" gobgpd -f "$W/gobgpd.toml" --api-hosts 127.0.0.1:50051 --log-level warn > "$W/gobgpd.log" 2>&1 &
    GP=$!
    PIDS="$PIDS $GP"
    sleep 2
    for p in 0 64 128 192; do
        A gobgp global rib add -a ipv4 10.10.0.$p/26 nexthop 198.18.0.1 origin igp med 10 \
            community 65000:100 large-community 4200000001:1:2
    done
    [ "$3" -gt 0 ] && A gobgp global rib add -a ipv4 10.10.0.0/26 nexthop 198.18.0.3 origin egp identifier 7
    A gobgp global rib add -a ipv6 2001:db8:100::/64 nexthop 2001:db8:18::1 origin igp
    A gobgp global rib add -a ipv6 2001:db8:101::/64 nexthop 2001:db8:18::1 origin igp
    record "$1" 65010 "$2" "$([ "$3" -gt 0 ] && echo v4 || echo none)" 0
    sleep 4
    A gobgp global rib del -a ipv4 10.10.0.192/26
    A gobgp global rib del -a ipv6 2001:db8:101::/64
    A gobgp neighbor 198.18.0.2 softresetin -a ipv4
    sleep 2
    A gobgp neighbor 198.18.0.2 shutdown --reason "tortie vectors: gobgp admin shutdown"
    finish "$1" gobgp "$4"
    kill "$GP" 2>/dev/null || true
    wait "$GP" 2>/dev/null || true
}

# ---- 2. BIRD 2.0.12: iBGP, AS 65020 ------------------------------------------------------------
bird_session() {
cat > "$W/bird.conf" <<'EOF'
router id 198.18.0.1;
protocol device { }
protocol static s4 { ipv4; route 10.20.0.0/26 unreachable; route 10.20.0.64/26 unreachable;
                     route 10.20.0.128/26 unreachable; }
protocol static x4 { ipv4; route 10.20.0.192/26 unreachable; }
protocol static s6 { ipv6; route 2001:db8:200::/64 unreachable; }
protocol static x6 { ipv6; route 2001:db8:201::/64 unreachable; }
filter tw_export {
  bgp_community.add((65000, 200));
  bgp_large_community.add((65020, 1, 2));
  bgp_local_pref = 200;
  accept;
}
protocol bgp peer {
  local 198.18.0.1 as 65020;
  neighbor 198.18.0.2 as 65020;
  passive on;
  graceful restart on;
  ipv4 { import none; export filter tw_export; next hop self; };
  ipv6 { import none; export filter tw_export; next hop address 2001:db8:18::1; };
}
EOF
ip netns exec "$NSA" bird -f -c "$W/bird.conf" -s "$W/bird.ctl" -P "$W/bird.pid" > "$W/bird.log" 2>&1 &
BP=$!
PIDS="$PIDS $BP"
sleep 2
record bird 65020 1 none 0
sleep 4
A birdc -s "$W/bird.ctl" disable x4 > /dev/null
A birdc -s "$W/bird.ctl" disable x6 > /dev/null
A birdc -s "$W/bird.ctl" reload in peer > /dev/null
sleep 2
A birdc -s "$W/bird.ctl" disable peer '"tortie vectors: bird admin shutdown"' > /dev/null
finish bird bird ""
kill "$BP" 2>/dev/null || true
wait "$BP" 2>/dev/null || true
}

# ---- 3. FRR 8.4 bgpd (+ zebra for interface addresses): eBGP, AS 65030 -------------------------
frr_session() {
chown frr:frr "$W"
cat > "$W/bgpd.conf" <<'EOF'
frr defaults traditional
hostname frr
route-map OUT permit 10
 set community 65000:300
 set large-community 65030:1:2
 set metric 30
router bgp 65030
 bgp router-id 198.18.0.1
 no bgp ebgp-requires-policy
 no bgp network import-check
 bgp graceful-restart
 neighbor 198.18.0.2 remote-as 65010
 neighbor 198.18.0.2 passive
 neighbor 198.18.0.2 capability extended-nexthop
 address-family ipv4 unicast
  network 10.30.0.0/26
  network 10.30.0.64/26
  network 10.30.0.128/26
  network 10.30.0.192/26
  neighbor 198.18.0.2 route-map OUT out
 exit-address-family
 address-family ipv6 unicast
  network 2001:db8:300::/64
  network 2001:db8:301::/64
  neighbor 198.18.0.2 activate
  neighbor 198.18.0.2 route-map OUT out
 exit-address-family
EOF
printf 'hostname frr\n' > "$W/zebra.conf"
chown frr:frr "$W"/*.conf
F="-z $W/zserv.api --vty_socket $W -u frr -g frr"
ip netns exec "$NSA" /usr/lib/frr/zebra $F -i "$W/zebra.pid" -f "$W/zebra.conf" > "$W/zebra.log" 2>&1 &
ZP=$!
PIDS="$PIDS $ZP"
sleep 1
ip netns exec "$NSA" /usr/lib/frr/bgpd $F -i "$W/bgpd.pid" -f "$W/bgpd.conf" -n -p 179 > "$W/bgpd.log" 2>&1 &
FP=$!
PIDS="$PIDS $FP"
sleep 3
record frr 65010 1 none 1
sleep 5
A vtysh --vty_socket "$W" -c 'conf t' -c 'router bgp 65030' -c 'address-family ipv4 unicast' \
    -c 'no network 10.30.0.192/26' > /dev/null
A vtysh --vty_socket "$W" -c 'conf t' -c 'router bgp 65030' -c 'address-family ipv6 unicast' \
    -c 'no network 2001:db8:301::/64' > /dev/null
A vtysh --vty_socket "$W" -c 'clear bgp ipv6 unicast 198.18.0.2 soft in' > /dev/null
sleep 3
A vtysh --vty_socket "$W" -c 'conf t' -c 'router bgp 65030' \
    -c 'neighbor 198.18.0.2 shutdown message tortie vectors: frr admin shutdown' > /dev/null
finish frr frr ""
kill "$FP" "$ZP" 2>/dev/null || true
wait "$FP" "$ZP" 2>/dev/null || true
}

# ---- 4. FRR over IPv6 transport with extended next hop (RFC 8950): IPv4 NLRI, IPv6 next hop ----
frr6_session() {
chown frr:frr "$W"
cat > "$W/bgpd6.conf" <<'EOF'
frr defaults traditional
hostname frr
router bgp 65030
 bgp router-id 198.18.0.1
 no bgp ebgp-requires-policy
 no bgp network import-check
 neighbor 2001:db8:18::2 remote-as 65010
 neighbor 2001:db8:18::2 passive
 neighbor 2001:db8:18::2 capability extended-nexthop
 address-family ipv4 unicast
  network 10.31.0.0/26
  network 10.31.0.64/26
  neighbor 2001:db8:18::2 activate
 exit-address-family
 address-family ipv6 unicast
  no neighbor 2001:db8:18::2 activate
 exit-address-family
EOF
printf 'hostname frr\n' > "$W/zebra.conf"
chown frr:frr "$W"/*.conf
F="-z $W/zserv6.api --vty_socket $W -u frr -g frr"
ip netns exec "$NSA" /usr/lib/frr/zebra $F -i "$W/zebra6.pid" -f "$W/zebra.conf" > "$W/zebra6.log" 2>&1 &
ZP=$!
PIDS="$PIDS $ZP"
sleep 1
ip netns exec "$NSA" /usr/lib/frr/bgpd $F -i "$W/bgpd6.pid" -f "$W/bgpd6.conf" -n -p 179 > "$W/bgpd6.log" 2>&1 &
FP=$!
PIDS="$PIDS $FP"
sleep 3
record frr6 65010 1 none 1 2001:db8:18::2 2001:db8:18::1
sleep 5
A vtysh --vty_socket "$W" -c 'conf t' -c 'router bgp 65030' \
    -c 'neighbor 2001:db8:18::2 shutdown' > /dev/null
finish frr6 frr "enh_"
kill "$FP" "$ZP" 2>/dev/null || true
wait "$FP" "$ZP" 2>/dev/null || true
}

# STEPS="gobgp4 bird" sh capture.sh ... runs a subset; KEEP=1 keeps the work directory (logs).
for step in ${STEPS:-gobgp4 gobgp2 gobgpap bird frr frr6}; do
    case $step in
    gobgp4) gobgp_session gobgp4 1 0 "" ;;
    gobgp2) gobgp_session gobgp2 0 0 "as2_" ;;
    gobgpap) gobgp_session gobgpap 1 8 "addpath_" ;;
    bird) bird_session ;;
    frr) frr_session ;;
    frr6) frr6_session ;;
    *) echo "unknown step $step" >&2; exit 1 ;;
    esac
done
for impl in gobgp bird frr; do [ -d "$OUT/$impl" ] && python3 "$W/dedup.py" "$OUT/$impl"; done
echo "vectors written under $OUT"
