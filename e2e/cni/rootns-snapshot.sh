#!/bin/bash
# rootns-snapshot.sh PREFIX: prints the state of the machine's root network namespace (and the
# CNI directories of the root mount namespace) that a CNI runtime test could change. The tests
# (e2e/tests/cni_runtimes.rs) run it before and after and require identical output.
#
# Volatile fields are dropped (address lifetimes, iptables counters and timestamps). Named netns
# and their /run/netns/* mounts are listed only if they start with PREFIX (the test's own), so
# that other tests creating their own namespaces at the same time do not disturb the comparison.
set -u
PREFIX=${1:?usage: rootns-snapshot.sh PREFIX}
echo "# links";      ip -o link | sed 's/\\ .*//'
echo "# addresses";  ip -o addr | sed -E 's/ (valid|preferred)_lft [^ ]+//g'
echo "# routes";     ip route show table all; ip -6 route show table all | grep -v '^local\|^multicast\|^anycast' || true
echo "# rules";      ip rule; ip -6 rule
echo "# qdiscs";     tc qdisc show
echo "# sysctl"
for k in net.ipv4.ip_forward net.ipv6.conf.all.forwarding net.ipv4.conf.all.proxy_arp \
         net.ipv4.conf.all.route_localnet net.ipv4.conf.all.rp_filter net.ipv4.conf.default.forwarding \
         net.ipv4.conf.default.proxy_arp net.ipv4.conf.default.route_localnet; do
  sysctl "$k" 2>&1
done
echo "# iptables";   iptables-save 2>/dev/null | grep -v '^#' | sed -E 's/\[[0-9]+:[0-9]+\]//'
echo "# ip6tables";  ip6tables-save 2>/dev/null | grep -v '^#' | sed -E 's/\[[0-9]+:[0-9]+\]//'
echo "# our netns";  ls /run/netns 2>/dev/null | grep "^$PREFIX" || true
# /var/lib/cni itself may be created (empty) by libcni or install-deps: only its contents count
echo "# libcni cache"; find /var/lib/cni -mindepth 1 2>/dev/null | sort
echo "# cni conf";   ls -A /etc/cni/net.d 2>/dev/null
# /run/netns itself is a bind mount that the first `ip netns add` on a machine makes; it stays
echo "# mounts"
awk '$5 != "/run/netns" && ($5 !~ "^/run/netns/" || $5 ~ "^/run/netns/'"$PREFIX"'") {print $4, $5, $9, $10}' \
  /proc/self/mountinfo | sort
