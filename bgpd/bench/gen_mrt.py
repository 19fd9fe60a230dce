"""Writes an MRT TABLE_DUMP_V2 file with N consecutive /26 routes out of 10.0.0.0/8, one peer,
for `gobgp mrt inject global` (the benchmark's injector)."""
import socket
import struct
import sys
import time

n, out, next_hop = int(sys.argv[1]), sys.argv[2], sys.argv[3]
nh = socket.inet_aton(next_hop)
ts = int(time.time())


def record(subtype: int, body: bytes) -> bytes:
    return struct.pack("!IHHI", ts, 13, subtype, len(body)) + body


peer_index = record(1, nh + struct.pack("!HH", 0, 1) + struct.pack("!B4s4sI", 2, nh, nh, 65001))
attrs = bytes([0x40, 1, 1, 0, 0x40, 2, 0, 0x40, 3, 4]) + nh  # ORIGIN IGP, empty AS_PATH, NEXT_HOP
entry = struct.pack("!HIH", 0, ts, len(attrs)) + attrs
ribs = [record(2, struct.pack("!IBI", i, 26, (10 << 24) + i * 64) + struct.pack("!H", 1) + entry) for i in range(n)]
# Debian's gobgp 3.x CLI may drop the last streamed records when it exits: repeat some at the end.
with open(out, "wb") as f:
    f.write(peer_index + b"".join(ribs) + b"".join(ribs[:5000]))
