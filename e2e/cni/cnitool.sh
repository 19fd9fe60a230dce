#!/bin/bash
# cnitool.sh: Debian's libcni 1.1.2 through cnitool (built from Debian's source package with
# Debian's Go and libcni; cached under $CACHE) runs the conflist in $W/net.d (tortie, portmap,
# bandwidth) against a pod netns: ADD (with portMappings and bandwidth as runtime config, CAP_ARGS),
# the pod's address and routes, connectivity (host <-> pod, pod -> client through the host, HTTP
# to the pod and to its hostPort from the client), CHECK, DEL, and DEL again.
# All runs under cnihost-exec.sh (a holder process), so the host side of CNI is $HOSTNS.
source "$(dirname "${BASH_SOURCE[0]}")"/lib.sh
need go dpkg-query apt-get unshare nsenter busybox wget iptables tc python3

build_cnitool() {   # $1: output binary
  # deb-src is not necessarily enabled: derive a deb-src entry from the system's deb entries and use
  # it through a private apt state under $B (nothing under /etc/apt or /var/lib/apt changes).
  local B="$W"/cnitool-build A
  A="$B"/apt; mkdir -p "$A"/sources.list.d "$A"/lists/partial "$A"/cache/archives/partial "$B"/src
  if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    sed 's/^Types: deb$/Types: deb-src/' /etc/apt/sources.list.d/debian.sources > "$A"/sources.list.d/debsrc.sources
  fi
  if [ -f /etc/apt/sources.list ]; then
    sed -n 's/^deb /deb-src /p' /etc/apt/sources.list > "$A"/sources.list.d/debsrc.list
  fi
  local APT=(apt-get -qq -o Dir::Etc::SourceList=/dev/null -o Dir::Etc::SourceParts="$A"/sources.list.d
             -o Dir::State::Lists="$A"/lists -o Dir::Cache="$A"/cache -o APT::Sandbox::User=root)
  "${APT[@]}" update
  (cd "$B"/src && "${APT[@]}" source --download-only "golang-github-appc-cni=${CNI_VER%+b*}" >/dev/null)
  tar -C "$B"/src -xJf "$B"/src/golang-github-appc-cni_*.orig.tar.xz
  mkdir -p "$B"/gopath/src/cnitool
  cp "$B"/src/golang-github-appc-cni-*/cnitool/cnitool.go "$B"/gopath/src/cnitool/
  (cd "$B"/gopath/src/cnitool && GO111MODULE=off GOPATH="$B"/gopath:/usr/share/gocode \
     GOCACHE="$B"/gocache GOFLAGS=-mod=mod go build -o "$B"/cnitool .)
  mkdir -p "$(dirname "$1")"
  mv "$B"/cnitool "$1.tmp.$$" && mv "$1.tmp.$$" "$1"
  rm -rf "$B"
}

CNI_VER=$(dpkg-query -W -f '${Version}' golang-github-appc-cni-dev) \
  || fail "golang-github-appc-cni-dev is not installed (run scripts/install-deps as root)"
CNITOOL=${CNITOOL:-$CACHE/cnitool-$CNI_VER-$(go env GOVERSION)/cnitool}
if [ ! -x "$CNITOOL" ]; then
  t0=$(date +%s%N); build_cnitool "$CNITOOL"
  echo "built cnitool in $(( ($(date +%s%N)-t0)/1000000 )) ms: $CNITOOL"
fi

HOLDER= HTTPD=
cleanup() {
  local rc=$?; set +e
  [ -z "$HTTPD" ] || { kill "$HTTPD"; wait "$HTTPD"; } 2>/dev/null
  [ -z "$HOLDER" ] || { kill "$HOLDER"; wait "$HOLDER"; } 2>/dev/null
  exit $rc
}
trap cleanup EXIT
# A holder process owns the private mount namespace (and the pod netns file in its /run/netns).
"$HERE"/cnihost-exec.sh "$HOSTNS" sleep infinity & HOLDER=$!
retry 50 grep -qx sleep /proc/$HOLDER/comm || fail "cnihost-exec.sh did not start"
IN=(nsenter -t "$HOLDER" -m -n)
POD=/run/netns/pod     # private to the holder's mount namespace
"${IN[@]}" ip netns add pod
"${IN[@]}" ip netns exec pod ip link set lo up

export NETCONFPATH="$W"/net.d CNI_PATH="$W"/bin CNI_IFNAME=eth0
export CNI_ARGS="IgnoreUnknown=1;K8S_POD_NAMESPACE=e2e;K8S_POD_NAME=cnitool-pod"
export CAP_ARGS='{"portMappings":[{"hostPort":'"$HOSTPORT"',"containerPort":8080,"protocol":"tcp"}],
  "bandwidth":{"ingressRate":8000000,"ingressBurst":80000,"egressRate":16000000,"egressBurst":160000}}'
t0=$(date +%s%N)
R=$("${IN[@]}" "$CNITOOL" add "$NET" "$POD") || fail "cnitool add failed: $R"
report add_ms $(( ($(date +%s%N)-t0)/1000000 ))
report result "$(python3 -c 'import json,sys; print(json.dumps(json.loads(sys.argv[1])))' "$R")"
# cnitool's container ID (cnitool.go): "cnitool-" + the first 20 hex digits of sha512(netns path)
report container_id "$(python3 -c 'import hashlib,sys; print("cnitool-"+hashlib.sha512(sys.argv[1].encode()).hexdigest()[:20])' "$POD")"
IP=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["ips"][0]["address"].split("/")[0])' "$R")
# (the test gives this pod both families)
IP6=$(python3 -c 'import json,sys; a=[i["address"].split("/")[0] for i in json.loads(sys.argv[1])["ips"] if ":" in i["address"]]; print(a[0] if a else "")' "$R")

PODX=("${IN[@]}" ip netns exec pod busybox)
pod_checks "$IP" "$("${PODX[@]}" ip -4 addr show eth0; "${PODX[@]}" ip route)"
make_www "$W"/www
"${PODX[@]}" httpd -f -p 8080 -h "$W"/www & HTTPD=$!
host_checks "$IP"
VETH=$(hostns ip route show proto 80 | awk '{print $3}')
connectivity "$IP" "${PODX[@]}"
if [ -n "$IP6" ]; then
  hostns busybox ping -c 1 -W 2 "$IP6" | grep 'bytes from' || fail "host -> pod ping (IPv6) failed"
  grep -q "default via fe80::ecee:eeff:feee:eeee dev eth0" <<<"$("${PODX[@]}" ip -6 route)" || fail "no IPv6 default route in the pod"
  report pod_ip6 "$IP6"
fi

# CHECK runs without portMappings: Debian's portmap 1.1.1 CHECK also looks for the IPv4 DNAT rules
# in ip6tables and fails whenever a port is mapped (containernetworking/plugins#819, fixed
# upstream later). tortie and bandwidth are checked against libcni's cached result as usual.
CAP_ARGS='{"bandwidth":{"ingressRate":8000000,"ingressBurst":80000,"egressRate":16000000,"egressBurst":160000}}' \
  "${IN[@]}" "$CNITOOL" check "$NET" "$POD" || fail "cnitool check failed"
report check ok
kill "$HTTPD"; wait "$HTTPD" 2>/dev/null || true; HTTPD=
"${IN[@]}" "$CNITOOL" del "$NET" "$POD" || fail "cnitool del failed"
"${IN[@]}" "$CNITOOL" del "$NET" "$POD" || fail "second cnitool del failed"
report del_twice ok
teardown_checks "$IP" "$VETH"
