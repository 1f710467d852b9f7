"""Multiple-choice scorer speed-up, old (per choice) vs new (shared prefix), in one process.

Usage (from the repo root; SmolLM2-135M and BIG-bench cached):
    PYTHONPATH=src OMP_NUM_THREADS=1 python3 scripts/mc_speedup.py --limit 10 --threads 1
Prints one JSON object: items, seconds of each scorer, speed-up, accuracies of both, and the
largest absolute difference of a choice's log-likelihood between the two.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from ecolora.client.device import Placement, resolve_device
from ecolora.client.model import load_base_model
from ecolora.eval.multiple_choice import choice_logprobs
from ecolora.eval.suites import load_suite


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--limit", type=int, default=10, help="items per task (10: 110 items)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, tokenizer = load_base_model(args.model, placement=Placement(device=resolve_device(args.device)))
    items = load_suite("bigbench-mc", limit=args.limit)
    runs = {}
    for name, shared in (("old_per_choice", False), ("new_shared_prefix", True)):
        start = time.perf_counter()
        scores = choice_logprobs(model, tokenizer, items, batch_size=args.batch_size, shared_prefix=shared)
        runs[name] = (time.perf_counter() - start, scores)
    (old_s, old), (new_s, new) = runs["old_per_choice"], runs["new_shared_prefix"]
    n = len(items)
    result = {
        "items": n,
        "choices": sum(len(i["choices"]) for i in items),
        "old_s": round(old_s, 2),
        "new_s": round(new_s, 2),
        "speedup": round(old_s / new_s, 2),
        "old_acc": sum(s.prediction == s.answer for s in old) / n,
        "new_acc": sum(s.prediction == s.answer for s in new) / n,
        "old_acc_norm": sum(s.prediction_norm == s.answer for s in old) / n,
        "new_acc_norm": sum(s.prediction_norm == s.answer for s in new) / n,
        "same_predictions": all(
            (a.prediction, a.prediction_norm) == (b.prediction, b.prediction_norm) for a, b in zip(old, new, strict=True)
        ),
        "max_abs_logprob_diff": max(
            abs(x - y) for a, b in zip(old, new, strict=True) for x, y in zip(a.logprobs, b.logprobs, strict=True)
        ),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
