"""Times one receiver: waits for the session, then polls the receiver's route count until it
reaches the target; reads the receiver-side pcap for the first UPDATE's arrival, and samples the
receiver's peak RSS (VmHWM) and the CPU time all its threads used meanwhile (schedstat, ns; it
includes answering the polls). Prints one JSON line."""
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time

target, established_cmd, count_cmd, pcap, tcpdump_pid, pid, sender_ip = sys.argv[1:8]
target, tcpdump_pid = int(target), int(tcpdump_pid)
if pid.startswith("@"):  # started before the receiver: wait for its PID file
    path, waited = pid[1:], time.time()
    while not (os.path.exists(path) and open(path).read().strip()):
        if time.time() - waited > 30:
            print(json.dumps({"error": "receiver never started"}))
            sys.exit(1)
        time.sleep(0.002)
    pid = open(path).read().strip()
pid = int(pid)


def sh(cmd: str) -> str:
    return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout


def hwm_kb(p: int) -> int:
    try:
        for line in open(f"/proc/{p}/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_ns(p: int) -> int:
    total = 0
    try:
        for t in os.listdir(f"/proc/{p}/task"):
            try:
                total += int(open(f"/proc/{p}/task/{t}/schedstat").read().split()[0])
            except OSError:
                pass
    except OSError:
        pass
    return total


cpu0 = cpu_ns(pid)
start = time.time()
established = None
count = 0
while time.time() - start < 300:
    if established is None:
        if "Established" in sh(established_cmd):
            established = time.time()
        else:
            time.sleep(0.01)
            continue
    try:
        count = int(sh(count_cmd).strip() or 0)
    except ValueError:
        count = 0
    if count >= target:
        break
    time.sleep(0.02)
else:
    print(json.dumps({"error": f"timeout at {count} routes"}))
    sys.exit(1)
done = time.time()
peak = hwm_kb(pid)
cpu = cpu_ns(pid) - cpu0
time.sleep(0.5)
os.kill(tcpdump_pid, signal.SIGTERM)
time.sleep(1)

first = last = None
update_bytes = 0
with open(pcap, "rb") as f:
    f.read(24)
    while len(h := f.read(16)) == 16:
        sec, usec, caplen, _ = struct.unpack("IIII", h)
        data = f.read(caplen)
        t = sec + usec / 1e6
        ip = data[14:]
        if len(ip) < 40:
            continue
        ihl = (ip[0] & 15) * 4
        payload = struct.unpack("!H", ip[2:4])[0] - ihl - (ip[ihl + 12] >> 4) * 4
        if ip[12:16] == socket.inet_aton(sender_ip) and payload > 100:
            first = first or t
            last = t
            update_bytes += payload
print(json.dumps({
    "first_update_to_all_s": round(done - first, 3) if first else None,
    "sender_wire_s": round(last - first, 3) if first else None,
    "established_to_all_s": round(done - established, 3),
    "update_bytes": update_bytes,
    "peak_rss_kb": peak,
    "cpu_s": round(cpu / 1e9, 3),
}))
