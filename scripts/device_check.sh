#!/usr/bin/env bash
# One-shot device check for a CUDA machine (run once, ~7 minutes at most), from the repo root:
#   bash scripts/device_check.sh
# Writes text/JSON files to $OUT (default ./device_out) and prints a summary at the end:
#   env.txt               GPU, driver, python and package versions
#   gpu_check.log + gpu_check/*.json   `make gpu-check`: 2 rounds x 3 clients, llama2-7b-shape bf16 +
#                         gradient checkpointing, fedit and fedit+ecolora (4bit if bitsandbytes)
#   bench_*.log + bench_*.json         `ecolora bench train` on cuda with the phase split
#   pytest_cuda.log       CPU-vs-CUDA equivalence tests
#   run_gpu_check/        a plain `ecolora run` of configs/gpu_check.yaml, 1 round (no adapter)
#   summary.txt           the figures of every step, one line each
# Each step runs under `timeout` so one failure or hang does not eat the others.
# DEVICE_CHECK_TINY=1: tiny sizes on the CPU (to test this script on a machine without a GPU).
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1 TOKENIZERS_PARALLELISM=false
PY="${PYTHON:-python3}"
OUT="${OUT:-./device_out}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
TINY="${DEVICE_CHECK_TINY:-0}"
BUDGET_S="${DEVICE_CHECK_BUDGET_S:-450}"
: > "$OUT/summary.txt"
note() { echo "$*" | tee -a "$OUT/summary.txt"; }

step() {  # name, timeout seconds, command...; skipped when the budget is spent
  local name="$1" limit="$2"; shift 2
  local left=$((BUDGET_S - SECONDS))
  if (( left < 20 )); then note "$name: SKIPPED (budget spent)"; return; fi
  (( limit > left )) && limit=$left
  echo "== $name (timeout ${limit}s)"
  local start=$SECONDS
  timeout --kill-after=10 "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  tail -n 25 "$OUT/$name.log"
  note "$name: rc=$rc in $((SECONDS - start)) s$([[ $rc == 124 ]] && echo ' (TIMEOUT)')"
}

# ---- 0. environment ------------------------------------------------------------------------------
{
  date -u; nvidia-smi 2>&1 | head -n 15
  "$PY" - <<'PYEOF'
import importlib, platform, torch
print("python", platform.python_version(), "torch", torch.__version__, "cuda", torch.version.cuda,
      "available", torch.cuda.is_available())
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print("device", p.name, f"{p.total_memory / 2**30:.1f} GiB", "bf16", torch.cuda.is_bf16_supported())
for name in ("transformers", "peft", "accelerate", "bitsandbytes", "flwr", "datasets", "gguf", "zstandard"):
    try:
        print(name, importlib.import_module(name).__version__)
    except Exception as exc:  # noqa: BLE001
        print(name, "missing:", type(exc).__name__)
PYEOF
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

# ---- 1. make gpu-check ---------------------------------------------------------------------------
if [[ "$TINY" == "1" ]]; then export GPU_CHECK_TINY=1; fi
step gpu_check 210 env OUT="$OUT/gpu_check" PYTHON="$PY" bash scripts/gpu_check.sh
sed -n '/== summary/,$p' "$OUT/gpu_check.log" | tail -n +2 | tee -a "$OUT/summary.txt"

# ---- 2. CPU-vs-CUDA equivalence tests ------------------------------------------------------------
step pytest_cuda 100 "$PY" -m pytest -q -p no:cacheprovider tests/unit/client/test_device_cuda.py \
  tests/unit/eval/test_eval_cuda.py
tail -n 1 "$OUT/pytest_cuda.log" | sed 's/^/pytest_cuda: /' >> "$OUT/summary.txt"

# ---- 3. ecolora bench train on cuda, phase split -------------------------------------------------
if [[ "$TINY" == "1" ]]; then
  BENCH=(--set train.device=cpu --set model.num_layers=2)
  MODELS=(smollm2-135m-shape)
else
  BENCH=(--set train.device=cuda --set model.dtype=bfloat16 --set train.num_threads=null)
  MODELS=(smollm2-135m-shape llama2-7b-shape)
fi
for model in "${MODELS[@]}"; do
  step "bench_$model" 100 "$PY" -m ecolora bench train --set model.name="$model" "${BENCH[@]}" \
    --out "$OUT/bench_$model.json"
  if [[ -f "$OUT/bench_$model.json" ]]; then
    "$PY" - "$OUT/bench_$model.json" <<'PYEOF' | tee -a "$OUT/summary.txt"
import json, sys
r = json.load(open(sys.argv[1]))
phases = ", ".join(f"{k} {v:.3f}" for k, v in r["phases_s"].items() if v > 0)
print(f"bench {r['model']} [{r['placement']}]: {r['tokens_per_s']:.0f} tokens/s, step {r['step_s']:.3f} s, "
      f"peak {r['peak_memory_bytes'] / 2**30:.2f} GiB, overhead {100 * r['overhead_share']:.1f}%, "
      f"not-train {100 * r['non_train_share']:.1f}%; s/round: {phases}")
PYEOF
  fi
done

# ---- 4. a real `ecolora run` (run directory, summary) on the same 7B shape, one round ----------
RUN=(--set fed.rounds=1)
[[ "$TINY" == "1" ]] && RUN+=(--set train.device=cpu --set model.name=smollm2-135m-shape --set model.num_layers=2)
step run_gpu_check 90 "$PY" -m ecolora run -c configs/gpu_check.yaml -o "$OUT/run_gpu_check" "${RUN[@]}"
rm -rf "$OUT/run_gpu_check/adapter" "$OUT/run_gpu_check/checkpoints"  # large, not needed back
[[ -f "$OUT/run_gpu_check/summary.json" ]] && echo "run_gpu_check summary: $(head -c 600 "$OUT/run_gpu_check/summary.json" | tr -d '\n')" >> "$OUT/summary.txt"

echo "================ summary ($OUT/summary.txt) ================"
cat "$OUT/summary.txt"
