#!/bin/sh
# Starts tortie-agent on a containerlab node. Environment (set per node in tortie.clab.yml):
#   NODE        node name            NODE_IP     underlay address with prefix (eth1)
#   DATASTORE   datastore URL (etcd://… shared by all nodes)
set -eu
ip addr add "$NODE_IP" dev eth1 2>/dev/null || true
ip link set eth1 up
exec tortie-agent --datastore "$DATASTORE" --node "$NODE" --ip "$NODE_IP" \
  --socket /var/run/tortie/agent.sock --cni-data-dir /var/lib/tortie/cni
