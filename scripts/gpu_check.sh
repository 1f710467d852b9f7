#!/usr/bin/env bash
# GPU check: 2 rounds x 3 clients of fedit and fedit+ecolora on llama2-7b-shape (bf16, gradient
# checkpointing), plus 4bit when bitsandbytes is importable; prints tokens/s, peak device memory and
# bytes per round, and writes one JSON report per run under $OUT (default ./gpu_check_out).
#
# Needs: one CUDA GPU (>= 24 GB for the bf16 7B base), python3 with torch, transformers, peft,
# safetensors, typer, rich, pyyaml, numpy. No internet, no install: runs from the source tree.
# GPU_CHECK_TINY=1: a 2-layer smollm2-135m-shape on the CPU instead (tests the script itself).
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
PY="${PYTHON:-python3}"
OUT="${OUT:-./gpu_check_out}"
mkdir -p "$OUT"
EXTRA=()
if [[ "${GPU_CHECK_TINY:-0}" == "1" ]]; then
  EXTRA=(--set train.device=cpu --set model.name=smollm2-135m-shape --set model.num_layers=2
         --set data.max_seq_len=64 --set fed.rounds=1)
elif ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "gpu-check needs a CUDA GPU: torch.cuda.is_available() is False here." >&2
  exit 2
fi
status=0
run_one() {  # name, then extra --set arguments
  local name="$1"; shift
  echo "== $name"
  if "$PY" -m ecolora bench train -c configs/gpu_check.yaml --rounds 2 --warmup-rounds 0 \
      --out "$OUT/gpu_check_$name.json" "${EXTRA[@]}" "$@"; then
    return 0
  fi
  echo "!! $name failed" >&2
  status=1
}
run_one fedit --set method=fedit
run_one fedit_ecolora --set method=fedit+ecolora
if "$PY" -c "import bitsandbytes" 2>/dev/null && [[ "${GPU_CHECK_TINY:-0}" != "1" ]]; then
  run_one fedit_ecolora_4bit --set method=fedit+ecolora --set model.quantization=4bit
else
  echo "== 4bit skipped: bitsandbytes is not importable (pip install 'ecolora[gpu]')"
fi
echo "== summary"
"$PY" - "$OUT" <<'PYEOF'
import json, pathlib, sys
for path in sorted(pathlib.Path(sys.argv[1]).glob("gpu_check_*.json")):
    r = json.loads(path.read_text())
    print(f"{path.stem[10:]:<20} {r['placement']:<40} tokens/s {r['tokens_per_s']:9.1f}  "
          f"peak {r['peak_memory_bytes'] / 2**30:6.2f} GiB  up/down per round "
          f"{r['up_bytes_per_round'] / 1e6:.3f}/{r['down_bytes_per_round'] / 1e6:.3f} MB  "
          f"overhead {100 * r['overhead_share']:.1f}%")
PYEOF
exit $status
