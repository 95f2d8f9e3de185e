#!/usr/bin/env bash
# Same-run comparison of spectct OSEM with PyTomography 3.4.0 on one saved case (issue 4).
#
#   benchmarks/peer_osem.sh [OUTDIR] [MATRIX] [STOPS_PER_HEAD]      (defaults: /tmp/osem_pair 128 60)
#
# Runs ours (saving case.npz), then the peer on that case, each under /usr/bin/time -v, and writes
# OUTDIR/pair.json with both results, wall times, peak RSS and the load average before/after each run.
# PEER_PY selects the peer interpreter (default /tmp/g_peer/bin/python; PyTomography is never a
# project dependency). Both runs use 2 torch threads.
set -euo pipefail
OUT=${1:-/tmp/osem_pair}
MATRIX=${2:-128}
STOPS=${3:-60}
PEER_PY=${PEER_PY:-/tmp/g_peer/bin/python}
HERE=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$OUT"
cd "$HERE"
cut -d' ' -f1-3 /proc/loadavg > "$OUT/load_ours_before"
/usr/bin/time -v -o "$OUT/time_ours.txt" .venv/bin/python benchmarks/bench_osem.py --matrix "$MATRIX" \
    --stops "$STOPS" --iterations 5 --subsets 15 --threads 2 --save "$OUT" --json "$OUT/ours.json"
cut -d' ' -f1-3 /proc/loadavg > "$OUT/load_ours_after"
cut -d' ' -f1-3 /proc/loadavg > "$OUT/load_peer_before"
/usr/bin/time -v -o "$OUT/time_peer.txt" "$PEER_PY" benchmarks/bench_osem.py --peer "$OUT/case.npz" \
    --threads 2 --json "$OUT/peer.json"
cut -d' ' -f1-3 /proc/loadavg > "$OUT/load_peer_after"
.venv/bin/python - "$OUT" <<'PY'
import json
import sys
from pathlib import Path

out = Path(sys.argv[1])


def gnu_time(path):
    rec = {}
    for line in path.read_text().splitlines():
        key, _, val = line.strip().rpartition(": ")
        if key.startswith("Elapsed (wall clock) time"):
            parts = [float(v) for v in val.split(":")]
            rec["process_wall_s"] = sum(v * 60 ** i for i, v in enumerate(reversed(parts)))
        elif key == "Maximum resident set size (kbytes)":
            rec["peak_rss_mb"] = int(val) / 1024
        elif key in ("User time (seconds)", "System time (seconds)"):
            rec[key.split()[0].lower() + "_s"] = float(val)
    return rec


pair = {}
for who in ("ours", "peer"):
    pair[who] = json.loads((out / f"{who}.json").read_text())
    pair[who].update(gnu_time(out / f"time_{who}.txt"))
    pair[who]["load_before"] = (out / f"load_{who}_before").read_text().split()
    pair[who]["load_after"] = (out / f"load_{who}_after").read_text().split()
ours_s = pair["ours"]["build_s"] + pair["ours"]["osem_total_s"]
pair["ratio_peer_over_ours"] = pair["peer"]["seconds"] / ours_s
(out / "pair.json").write_text(json.dumps(pair, indent=1))
print(json.dumps(pair, indent=1))
PY
