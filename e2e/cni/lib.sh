# Sourced by the runtime scripts (cnitool.sh, podman.sh, cri.sh). Shared settings and checks.
#
# Environment, set by e2e/tests/cni_runtimes.rs (which has already created both namespaces, started
# tortie-agent in HOSTNS and written $W/bin and $W/net.d):
#   W          the test's work dir: bin/ (tortie, tortie-ipam, portmap, bandwidth, loopback),
#              net.d/ (one conflist), everything else the runtime needs is created under it
#   HOSTNS     the throw-away netns that is the "host side" of CNI (with HOST_IP on up0)
#   CLIENTNS   a netns on the other end of up0 (CLIENT_IP): an "outside" client of the node
#   HOST_IP, CLIENT_IP, HOSTPORT, NET (network name), POOL_PREFIX (e.g. "10.244.")
#   CACHE      a directory kept between runs (cnitool build, Python venv)
# Output lines "E2E key=value" are read by the Rust test; any failed check exits non-zero.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
: "${W:?}" "${HOSTNS:?}" "${CLIENTNS:?}" "${HOST_IP:?}" "${CLIENT_IP:?}" "${HOSTPORT:?}" "${NET:?}"
: "${POOL_PREFIX:=10.244.}" "${CACHE:=$W/cache}"
mkdir -p "$CACHE"
MARK="hello-from-tortie-pod"   # what the pod's httpd serves

report() { echo "E2E $1=$2"; }
fail() { echo "E2E-FAIL $*"; exit 1; }
need() { local c; for c; do command -v "$c" >/dev/null || fail "command '$c' not found (run scripts/install-deps as root)"; done; }
retry() { local n=$1 i; shift; for i in $(seq "$n"); do "$@" && return 0; sleep 0.2; done; return 1; }
hostns() { ip netns exec "$HOSTNS" "$@"; }

# The web root a pod serves: one file with $MARK.
make_www() { mkdir -p "$1"; echo "$MARK" > "$1"/index.html; }

# A busybox root filesystem in $1 (busybox-static, so no libraries needed).
make_rootfs() {
  mkdir -p "$1"/{bin,etc,proc,sys,dev,tmp,www}
  cp /bin/busybox "$1"/bin/busybox
  local a; for a in $("$1"/bin/busybox --list); do [ "$a" = busybox ] || ln -sf busybox "$1"/bin/"$a"; done
  echo "$MARK" > "$1"/www/index.html
}

# pod_checks IP OUTPUT: OUTPUT is `ip -4 addr show eth0; ip route` as seen inside the pod.
pod_checks() {
  local ip=$1 out=$2
  echo "$out"
  case "$ip" in "$POOL_PREFIX"*) ;; *) fail "pod address $ip is not in the pool ($POOL_PREFIX*)";; esac
  grep -q "inet $ip/32 " <<<"$out" || fail "eth0 in the pod does not hold $ip/32"
  grep -q "default via 169.254.1.1 dev eth0" <<<"$out" || fail "no default route via 169.254.1.1 in the pod"
  report pod_ip "$ip"
}

# host_checks IP: the host side while the pod runs. Prints the host veth name (E2E host_veth=).
host_checks() {
  local ip=$1 veth
  echo "host side ($HOSTNS):"; hostns ip -br link; hostns ip route
  veth=$(hostns ip route show proto 80 | awk -v ip="$ip" '$1 == ip && $2 == "dev" {print $3}')
  [ -n "$veth" ] || fail "no host route (proto 80) to $ip in $HOSTNS"
  case "$veth" in cali*) ;; *) fail "host route to $ip uses $veth, not a cali* veth";; esac
  [ "$(hostns cat /proc/sys/net/ipv4/conf/"$veth"/proxy_arp)" = 1 ] || fail "proxy_arp is off on $veth"
  report host_veth "$veth"
  # bandwidth: a tbf on the host veth (pod ingress) and an ifb with a tbf (pod egress)
  local qd; qd=$(hostns tc qdisc show); echo "$qd"
  grep -q "qdisc tbf .* dev $veth " <<<"$qd" || fail "no tbf qdisc on $veth (bandwidth plugin)"
  grep -q "qdisc tbf .* dev bwp" <<<"$qd" || fail "no tbf qdisc on a bwp* ifb (bandwidth plugin, egress)"
  report tbf_rate "$(grep "qdisc tbf .* dev $veth " <<<"$qd" | sed -E 's/.* rate ([^ ]+).*/\1/')"
  # portmap: a DNAT of HOSTPORT to the pod
  local nat; nat=$(hostns iptables -t nat -S)
  grep -q -- "--dport $HOSTPORT .*-j DNAT --to-destination $ip:8080" <<<"$nat" \
    || { echo "$nat"; fail "no portmap DNAT for $HOSTPORT -> $ip:8080"; }
}

# connectivity IP PODEXEC...: PODEXEC runs a command inside the pod (with busybox in PATH).
connectivity() {
  local ip=$1; shift
  hostns busybox ping -c 1 -W 2 "$ip" | grep 'bytes from' || fail "host -> pod ping failed"
  "$@" ping -c 1 -W 2 "$HOST_IP" | grep 'bytes from' || fail "pod -> host ping failed"
  "$@" ping -c 1 -W 2 "$CLIENT_IP" | grep 'bytes from' || fail "pod -> client (routed by the host) ping failed"
  local body
  body=$(retry 25 hostns wget -qO- -T 2 "http://$ip:8080/") || fail "host -> pod:8080 HTTP failed"
  [ "$body" = "$MARK" ] || fail "host -> pod:8080 HTTP returned '$body'"
  body=$(retry 10 ip netns exec "$CLIENTNS" wget -qO- -T 2 "http://$HOST_IP:$HOSTPORT/") \
    || fail "client -> $HOST_IP:$HOSTPORT (hostPort) HTTP failed"
  [ "$body" = "$MARK" ] || fail "hostPort HTTP returned '$body'"
  report hostport_http ok
  report connectivity ok
}

# teardown_checks IP VETH: the host side after the runtime's DEL(s).
teardown_checks() {
  local ip=$1 veth=$2
  echo "after DEL:"; hostns ip -br link; hostns ip route; hostns tc qdisc show
  ! hostns ip link show "$veth" >/dev/null 2>&1 || fail "$veth still exists after DEL"
  [ -z "$(hostns ip route show proto 80)" ] || fail "host routes left after DEL: $(hostns ip route show proto 80)"
  # (outputs are captured first: `cmd | grep -q` under pipefail can fail by SIGPIPE on a match)
  ! grep -q ' bwp' <<<"$(hostns ip -o link)" || fail "bandwidth ifb left after DEL"
  ! grep -q -- "--to-destination $ip:" <<<"$(hostns iptables -t nat -S)" || fail "portmap DNAT left after DEL"
  report teardown ok
}
