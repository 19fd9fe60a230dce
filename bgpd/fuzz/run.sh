#!/bin/sh
# run.sh [SECONDS] -- runs every cargo-fuzz target of this crate for SECONDS each (default 60),
# seeded with the captured vectors of ../tests/vectors. For CI. Works on stable Rust (`-s none`:
# no sanitizer; add a nightly toolchain and drop `-s none` for ASan). Exits non-zero on a crash
# (the input is left in artifacts/<target>/).
set -eu
SECS=${1:-60}
cd "$(dirname "$0")"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
# Seed corpus: every captured message, as raw bytes behind a chunking octet of 0 (no split).
unhex() { if command -v xxd >/dev/null; then xxd -r -p; else python3 -c 'import sys; sys.stdout.buffer.write(bytes.fromhex(sys.stdin.read()))'; fi; }
mkdir -p corpus/wire_decode
for f in ../tests/vectors/*/*.hex; do
    name=$(echo "$f" | sed 's|.*/vectors/||; s|/|_|; s|\.hex$||')
    { printf '\000'; tr -d ' \n' < "$f" | unhex; } > "corpus/wire_decode/seed_$name"
done
for target in $(cargo fuzz list); do
    echo "== $target: ${SECS}s"
    cargo fuzz run "$target" -s none -- -max_total_time="$SECS" -print_final_stats=1
done
