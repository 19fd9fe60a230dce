"""Licence gate: every package in the resolved graph must offer a licence from deny.toml's
allow-list. `cargo deny check licenses` does the same where it is installed."""
import json
import re
import sys
import tomllib

allow = set(tomllib.load(open("deny.toml", "rb"))["licenses"]["allow"])
meta = json.load(sys.stdin)
ours = set(meta["workspace_members"])


def branch_ok(branch: str) -> bool:
    parts = [x.strip(" ()") for x in re.split(r"\bAND\b", branch)]
    return all(x in allow for x in parts if x)


def acceptable(expr: str) -> bool:
    expr = expr.replace("/", " OR ").strip()
    if not expr:
        return False
    # "(A OR B) AND C": distribute one level.
    m = re.fullmatch(r"\((.*)\)\s+AND\s+(.*)", expr)
    if m:
        return any(branch_ok(f"{b} AND {m.group(2)}") for b in re.split(r"\bOR\b", m.group(1)))
    return any(branch_ok(b) for b in re.split(r"\bOR\b", expr))


bad = [
    f"{p['name']} {p['version']}: {p.get('license') or 'no licence'}"
    for p in meta["packages"]
    if p["id"] not in ours and not acceptable(p.get("license") or "")
]
if bad:
    print("licences outside deny.toml's allow-list:\n  " + "\n  ".join(bad))
    sys.exit(1)
print(f"{len(meta['packages']) - len(ours)} dependencies, all licences allowed")
