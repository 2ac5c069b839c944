#!/usr/bin/env bash
# `make bench`: one td1 training step at the real shapes (BERT-base teacher, paper student
# 4L/312, batch 32, seq 64, 2 threads), compiled trainer vs PyTorch eager vs torch.compile, in
# one run on this machine. Prints a table with medians and ratios and writes it to
# out/bench/results.md. Loop kernels are compiled for this CPU (`--cpu native`, as PyTorch
# dispatches to this CPU's kernels; CPU=x86-64-v3 for the portable default). Installs PyTorch into .venv when missing (PyPI, a few GB).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=out/bench
REPS=${REPS:-5}
THREADS=${THREADS:-2}
mkdir -p "$OUT"
if [[ ! -x .venv/bin/python ]] || ! .venv/bin/python -c "import torch, safetensors, numpy" 2>/dev/null; then
  echo "bench: installing PyTorch into .venv (pip install torch safetensors numpy)"
  python3 -m venv .venv
  .venv/bin/pip install -q -r tests/reference/requirements.txt
fi
PY=.venv/bin/python
echo "bench: machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
[[ -f $OUT/weights.safetensors ]] || $PY bench/make_inputs.py "$OUT"

calc() { $PY -c "print(round($1, 3))"; }
start=$(date +%s.%N)
target/release/tbc compile --target cpu --cpu "${CPU:-native}" --phases gd,td1,td2,eval --preset paper --batch 32 --seq-len 64 -o "$OUT/trainer"
compile_s=$(calc "$(date +%s.%N) - $start")
size_mb=$(calc "$(stat -c %s "$OUT/trainer") / 1e6")
"$OUT/trainer" info

echo "bench: compiled trainer, td1 step x $REPS"
RAYON_NUM_THREADS=$THREADS /usr/bin/time -f "%M" -o "$OUT/trainer.rss" "$OUT/trainer" step --phase td1 \
  --weights "$OUT/weights.safetensors" --batch "$OUT/batch.safetensors" --out "$OUT/td1_out.safetensors" \
  --lr 5e-5 --repeat $((REPS + 1)) 2> "$OUT/trainer.log"
tbc_s=$(calc "$(grep -oP 'compute time: median \K[0-9.]+' "$OUT/trainer.log")")
tbc_rss=$(cat "$OUT/trainer.rss")

echo "bench: PyTorch eager and torch.compile (cold compile), td1 step x $REPS"
$PY bench/pytorch_step.py --modes eager,compile --threads "$THREADS" --warmup 1 --reps "$REPS" > "$OUT/pytorch.jsonl"
field() { $PY -c "import json; d=[json.loads(l) for l in open('$OUT/pytorch.jsonl') if l.strip()]; m=[x for x in d if x['mode']=='$1'][0]; print(round(m['$2'], 3))"; }
eager_s=$(field eager median_s); comp_s=$(field compile median_s); comp_c=$(field compile compile_s)
eager_rss=$(field eager peak_rss_mib); comp_rss=$(field compile peak_rss_mib)

{
  echo "| td1 step, $THREADS threads | median s/step | tbc speed-up | peak RSS |"
  echo "|---|---|---|---|"
  echo "| tbc compiled trainer | $tbc_s | 1.00 | $((tbc_rss / 1024)) MiB |"
  echo "| PyTorch eager | $eager_s | $(calc "$eager_s / $tbc_s") | ${eager_rss} MiB |"
  echo "| torch.compile | $comp_s (compile ${comp_c} s) | $(calc "$comp_s / $tbc_s") | ${comp_rss} MiB |"
  echo
  echo "tbc compile (gd, td1, td2, eval): ${compile_s} s; trainer size ${size_mb} MB"
} | tee "$OUT/results.md"
