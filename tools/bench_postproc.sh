#!/usr/bin/env bash
# Benchmark of the whole per-image post-processing: cellseg-postproc (criterion, one thread) against
# the seed's Python post-processing (numpy + pycocotools + opencv + torch CPU, tools/postproc_seed.py)
# on the same ~500 candidate soft masks per 520x704 image, built from real Sartorius ground truth.
# Prints both timings and the ratio. Needs .venv (make test) and ../shared/realdata.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
REALDATA=${REALDATA:-../shared/realdata}
TARGET=${CARGO_TARGET_DIR:-target}
OUT="$TARGET/postproc-bench"
mkdir -p "$OUT"
# Criterion writes its estimates here, fresh for this run: a relative CARGO_TARGET_DIR would otherwise
# send them under the bench crate's folder while the table below read stale ones.
export CRITERION_HOME
CRITERION_HOME="$(realpath "$OUT")/criterion"
rm -rf "$CRITERION_HOME"
INPUT="$OUT/input.json"

echo "== generating the input from $REALDATA" >&2
"$PY" tools/postproc_bench.py gen "$REALDATA" "$INPUT"

echo "== Rust: cargo bench -p cellseg-postproc --bench pipeline" >&2
CELLSEG_POSTPROC_BENCH_INPUT="$(realpath "$INPUT")" \
  cargo bench -p cellseg-postproc --bench pipeline -- --noplot >&2

echo "== Python baseline (seed algorithm)" >&2
"$PY" tools/postproc_bench.py time "$INPUT" "${REPEATS:-5}" > "$OUT/python.json"

"$PY" - "$CRITERION_HOME/pipeline" "$OUT/python.json" <<'PYEOF'
import glob, json, os, sys
crit, py = sys.argv[1], json.load(open(sys.argv[2]))
print(f"{'image':<16}{'candidates':>11}{'kept':>6}{'python ms':>12}{'rust ms':>10}{'ratio':>9}")
for name, p in py.items():
    est = glob.glob(os.path.join(crit, name, "*", "new", "estimates.json"))
    rust_ms = json.load(open(est[0]))["median"]["point_estimate"] / 1e6
    print(f"{name:<16}{p['candidates']:>11}{p['kept']:>6}{p['median_ms']:>12.1f}{rust_ms:>10.2f}"
          f"{p['median_ms'] / rust_ms:>8.1f}x")
PYEOF
