#!/usr/bin/env bash
# Quick start: the planned-migration scenario on the wan-migration lab, migroute next
# to the naive baseline. Brings the lab up in network namespaces (no Docker), starts a
# migroute agent on pe-a and on pe-b (BGP to the reflector pe-in), moves the VM 3 times
# (A->B, B->A, A->B) through `migroute migrate` with a 100 ms pause, then 3 times the
# naive way (move, then announce), probing the VM at 1000 packets/s plus one TCP
# connection throughout, and prints the summary of both modes. Writes report.json and
# timeline.svg in the current directory. Needs root (namespaces, veths, FRR daemons).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
runs="${RUNS:-3}"

if [ "$(id -u)" -ne 0 ]; then
    echo "demo.sh: needs root (network namespaces and FRR daemons); try: sudo $0" >&2
    exit 1
fi

if [ ! -x /usr/lib/frr/bgpd ] || ! command -v vtysh >/dev/null; then
    echo "demo.sh: installing FRR (apt-get install frr)"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q frr
    # The lab starts its own FRR daemons per node; the host's service is not needed.
    systemctl disable --now frr >/dev/null 2>&1 || true
fi

echo "demo.sh: building migroute (release)"
cargo build --release -p migroute --manifest-path "$repo/Cargo.toml"
bin="$repo/target/release/migroute"

out="$(pwd)"
"$bin" lab run "$here/wan-migration.clab.yml" --scenario planned-migration --runs "$runs" \
    --report "$out/report.json" --svg "$out/timeline.svg"

echo
echo "Summary per mode (median (min-max) over $runs moves each; loss in packets at 1000/s):"
python3 - "$out/report.json" <<'PY' 2>/dev/null || echo "(python3 missing: see $out/report.json)"
import json, sys
r = json.load(open(sys.argv[1]))
fields = ["lost_outside_pause", "lost_in_pause", "longest_gap_ms", "announce_to_ingress_fib_ms"]
print("%-9s %5s  %s" % ("mode", "runs", "  ".join("%-28s" % f for f in fields)))
for mode, s in r["summary"].items():
    cells = []
    for f in fields:
        st = s.get(f)
        cells.append("%-28s" % ("-" if st is None else "%.0f (%.0f-%.0f)" % (st["median"], st["min"], st["max"])))
    print("%-9s %5d  %s" % (mode, s["runs"], "  ".join(cells)))
print("TCP connection survived: " + ", ".join("%s %d/%d" % (m, s["tcp_survived"], s["runs"]) for m, s in r["summary"].items()))
PY
echo "report: $out/report.json  timeline: $out/timeline.svg"
