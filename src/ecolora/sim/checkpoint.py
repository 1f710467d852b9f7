"""Crash-safe checkpoints of an in-process run, and what they hold to continue it exactly.

One checkpoint is one file, ``<run>/checkpoints/round-000003.safetensors``:

* every tensor of the state (global LoRA, server residuals and replicas, each client's local LoRA
  and residuals, the torch RNG state, FLoRA's merged base weights) as a safetensors tensor
  ``t0, t1, ...``, stored bit for bit in its own dtype;
* the state's structure and every non-tensor value (round, loss history, schedules, client ids,
  RNG states of python/numpy and of the runner's sampler, the byte ledger, metrics history) as
  UTF-8 JSON in a ``uint8`` tensor named ``__tree__``, tensors replaced by ``{"__tensor__": "t0"}``;
* safetensors metadata ``{"format": "ecolora-checkpoint-1", "round": "3"}``.

No pickle: loading a checkpoint cannot run code. The write is atomic: the bytes go to
``.round-000003.safetensors.tmp-<pid>``, are flushed and fsync'ed, the file is renamed
(``os.replace``) and the directory fsync'ed. A crash mid-write leaves only a temporary file, which
:func:`latest_checkpoint` ignores and the next save deletes; a final-named file that does not
load falls back to the previous checkpoint (the last ``keep`` are kept).

Test hook: ``ECOLORA_TEST_CHECKPOINT_PAUSE="<round>:<seconds>"`` makes the write of that round's
checkpoint stop for that long after half of its bytes are on disk, so a test can kill it there.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save as save_tensors

from ecolora.client.lora import base_weight_snapshot, restore_base_weights, use_adapter
from ecolora.rundir import RunDirError

if TYPE_CHECKING:  # pragma: no cover
    from ecolora.config import RunConfig
    from ecolora.network.ledger import ByteLedger
    from ecolora.sim.setup import RunSetup

logger = logging.getLogger("ecolora")

__all__ = [
    "CHECKPOINT_DIR",
    "CHECKPOINT_FORMAT",
    "PAUSE_ENV",
    "ResumeError",
    "capture_rng",
    "capture_run",
    "checkpoint_due",
    "checkpoint_path",
    "config_json",
    "decode_tree",
    "encode_tree",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "restore_rng",
    "restore_run",
    "resume_state",
    "rewrite_metrics",
    "save_checkpoint",
]

CHECKPOINT_DIR = "checkpoints"  # inside a run directory
CHECKPOINT_FORMAT = "ecolora-checkpoint-1"
PAUSE_ENV = "ECOLORA_TEST_CHECKPOINT_PAUSE"
_NAME = re.compile(r"^round-(\d{6})\.safetensors$")
_TREE = "__tree__"


class ResumeError(RunDirError):
    """A run cannot be resumed as asked (e.g. its config changed since the checkpoint)."""


# ---- files ---------------------------------------------------------------------------------------
def checkpoint_path(directory: Path, server_round: int) -> Path:
    return Path(directory) / f"round-{server_round:06d}.safetensors"


def checkpoint_due(server_round: int, every: int, rounds: int) -> bool:
    """Whether a run of ``rounds`` rounds checkpoints after ``server_round`` (every ``every``, 0: never, and the last)."""
    return every > 0 and (server_round % every == 0 or server_round == rounds)


def save_checkpoint(directory: Path, server_round: int, state: Mapping[str, Any], keep: int = 2) -> Path:
    """Atomically write ``state`` as the checkpoint of ``server_round``; keep the newest ``keep``."""
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}.")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob(".round-*.tmp-*"):  # left by a crash mid-write
        stale.unlink(missing_ok=True)
    tree, tensors = encode_tree(dict(state))
    tensors[_TREE] = torch.frombuffer(bytearray(json.dumps(tree).encode()), dtype=torch.uint8)
    data = save_tensors(tensors, metadata={"format": CHECKPOINT_FORMAT, "round": str(server_round)})
    path = checkpoint_path(directory, server_round)
    _write_atomic(path, data, server_round)
    for old_round, old_path in list_checkpoints(directory)[:-keep]:
        old_path.unlink(missing_ok=True)
        logger.debug("Removed checkpoint of round %d", old_round)
    return path


def list_checkpoints(directory: Path) -> list[tuple[int, Path]]:
    """Final-named checkpoints in ``directory``, oldest first (temporary files are not listed)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _NAME.match(p.name))]
    return sorted(found)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read one checkpoint file; raise ValueError if it is not a complete ecolora checkpoint."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as fh:
            metadata = fh.metadata() or {}
            tensors = {name: fh.get_tensor(name) for name in fh.keys()}
    except Exception as exc:  # safetensors raises its own error types
        raise ValueError(f"Checkpoint {path} cannot be read: {exc}") from exc
    if metadata.get("format") != CHECKPOINT_FORMAT or _TREE not in tensors:
        raise ValueError(f"{path} is not an {CHECKPOINT_FORMAT} file (metadata {metadata}).")
    tree = json.loads(tensors.pop(_TREE).numpy().tobytes().decode())
    state = decode_tree(tree, tensors)
    if not isinstance(state, dict):
        raise ValueError(f"{path}: the checkpoint state must be a mapping, got {type(state).__name__}.")
    if str(state.get("round")) != metadata.get("round"):
        raise ValueError(f"{path}: metadata round {metadata.get('round')} but state round {state.get('round')}.")
    return state


def latest_checkpoint(directory: Path) -> dict[str, Any] | None:
    """The newest checkpoint that loads (older ones are tried when a newer one is broken)."""
    for server_round, path in reversed(list_checkpoints(directory)):
        try:
            return load_checkpoint(path)
        except ValueError as exc:
            logger.warning("Skipping checkpoint of round %d: %s", server_round, exc)
    return None


# ---- resuming a run directory (shared by the sync, hierarchical and asynchronous loops) ----------
def config_json(config: RunConfig) -> str:
    """The canonical JSON of a run's config, stored in each checkpoint to refuse a changed config."""
    return json.dumps(config.to_dict(), sort_keys=True)


def resume_state(config: RunConfig, out_dir: Path) -> dict[str, Any] | None:
    """The run's last complete checkpoint (None: none yet); refuses one of another config."""
    out_dir = Path(out_dir)
    state = latest_checkpoint(out_dir / CHECKPOINT_DIR)
    if state is None:
        logger.warning("No complete checkpoint in %s; starting the run over.", out_dir / CHECKPOINT_DIR)
        return None
    if state["config_json"] != config_json(config):
        saved, now = json.loads(state["config_json"]), json.loads(config_json(config))
        diff = sorted(k for k in saved.keys() | now.keys() if saved.get(k) != now.get(k))
        raise ResumeError(
            f"{out_dir}/config.yaml differs from the config its checkpoint of round {state['round']} "
            f"was written with (sections {diff}); resume with the original config.yaml."
        )
    return state


def rewrite_metrics(metrics_path: Path, history: list[dict[str, Any]]) -> None:
    """metrics.jsonl as of the checkpoint (drops rounds written after it), replaced atomically."""
    metrics_path = Path(metrics_path)
    tmp = metrics_path.with_name(metrics_path.name + ".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in history), encoding="utf-8")
    tmp.replace(metrics_path)


def _write_atomic(path: Path, data: bytes, server_round: int) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    pause_s = _pause_seconds(server_round)
    with open(tmp, "wb") as fh:
        half = len(data) // 2 if pause_s else 0
        fh.write(data[:half])
        if pause_s:
            fh.flush()
            os.fsync(fh.fileno())
            logger.warning("%s: pausing %.0f s inside the write of %s", PAUSE_ENV, pause_s, path.name)
            time.sleep(pause_s)
        fh.write(data[half:])
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _pause_seconds(server_round: int) -> float:
    spec = os.environ.get(PAUSE_ENV, "")
    if not spec:
        return 0.0
    round_text, _, seconds = spec.partition(":")
    try:
        return float(seconds or 60) if int(round_text) == server_round else 0.0
    except ValueError:
        raise ValueError(f"{PAUSE_ENV} must look like ROUND:SECONDS (e.g. 2:60), got {spec!r}.") from None


# ---- state trees <-> JSON + tensors ---------------------------------------------------------------
def encode_tree(value: Any, tensors: dict[str, torch.Tensor] | None = None) -> tuple[Any, dict[str, torch.Tensor]]:
    """JSON-able tree and the tensors it refers to (``{"__tensor__": name}``).

    Handles dicts (any hashable JSON-able keys), lists, tuples, sets, numpy arrays and scalars,
    tensors, bytes (as ``uint8`` tensors) and JSON scalars; anything else raises TypeError naming
    its type.
    """
    tensors = {} if tensors is None else tensors

    def enc(v: Any) -> Any:
        if isinstance(v, torch.Tensor):
            name = f"t{len(tensors)}"
            tensors[name] = v.detach().cpu().contiguous().clone()
            return {"__tensor__": name}
        if isinstance(v, dict):
            if all(isinstance(k, str) and not k.startswith("__") for k in v):
                return {k: enc(x) for k, x in v.items()}
            return {"__items__": [[enc(k), enc(x)] for k, x in v.items()]}
        if isinstance(v, list):
            return [enc(x) for x in v]
        if isinstance(v, tuple):
            return {"__tuple__": [enc(x) for x in v]}
        if isinstance(v, set | frozenset):
            return {"__set__": [enc(x) for x in sorted(v, key=repr)]}
        if isinstance(v, bytes):  # wire payloads (FedBuff's replies in flight)
            name = f"t{len(tensors)}"
            tensors[name] = torch.from_numpy(np.frombuffer(v, dtype=np.uint8).copy())
            return {"__bytes__": name}
        if isinstance(v, np.ndarray):
            return {"__ndarray__": v.tolist(), "dtype": str(v.dtype)}
        if isinstance(v, np.generic):
            return v.item()
        if v is None or isinstance(v, bool | int | float | str):
            return v
        raise TypeError(f"Cannot checkpoint a value of type {type(v).__name__}: {v!r:.80}")

    return enc(value), tensors


def decode_tree(tree: Any, tensors: Mapping[str, torch.Tensor]) -> Any:
    """Inverse of :func:`encode_tree`."""
    if isinstance(tree, list):
        return [decode_tree(x, tensors) for x in tree]
    if not isinstance(tree, dict):
        return tree
    if "__tensor__" in tree:
        return tensors[tree["__tensor__"]]
    if "__bytes__" in tree:
        return tensors[tree["__bytes__"]].numpy().tobytes()
    if "__items__" in tree:
        return {_hashable(decode_tree(k, tensors)): decode_tree(v, tensors) for k, v in tree["__items__"]}
    if "__tuple__" in tree:
        return tuple(decode_tree(x, tensors) for x in tree["__tuple__"])
    if "__set__" in tree:
        return {_hashable(decode_tree(x, tensors)) for x in tree["__set__"]}
    if "__ndarray__" in tree:
        return np.asarray(tree["__ndarray__"], dtype=tree["dtype"])
    return {k: decode_tree(v, tensors) for k, v in tree.items()}


def _hashable(value: Any) -> Any:
    return tuple(_hashable(v) for v in value) if isinstance(value, list | tuple) else value


# ---- random number generators ----------------------------------------------------------------------
def capture_rng(sampler: np.random.Generator | None = None) -> dict[str, Any]:
    """States of python's, numpy's and torch's global generators and of ``sampler``."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(legacy=False),
        "torch": torch.get_rng_state(),
    }
    if sampler is not None:
        state["sampler"] = sampler.bit_generator.state
    return state


def restore_rng(state: Mapping[str, Any], sampler: np.random.Generator | None = None) -> None:
    """Put back what :func:`capture_rng` saved (``sampler`` is restored in place)."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if sampler is not None:
        sampler.bit_generator.state = state["sampler"]


# ---- a whole in-process run ---------------------------------------------------------------------
def capture_run(
    setup: RunSetup,
    server_round: int,
    sampler: np.random.Generator,
    ledger: ByteLedger,
    history: list[dict[str, Any]],
    extra: Mapping[str, Any],
) -> dict[str, Any]:
    """Everything needed to continue a run after ``server_round`` exactly (see the module doc).

    ``extra`` holds the runner's own values (config, initial eval loss, wall time so far).
    FLoRA merges stacks into the base weights all simulated clients share; those weights are
    saved too (only once something was merged).
    """
    shared = setup.shared
    shared_state: dict[str, Any] = {"active_adapter": shared.active_adapter, "merged_tags": set(shared.merged_tags)}
    if shared.merged_tags:
        shared_state["base_weights"] = base_weight_snapshot(shared.model)
    return {
        **extra,
        "round": server_round,
        "strategy": setup.strategy.state_dict(),
        "clients": {c.client_id: c.state for c in setup.clients if c.state},
        "shared": shared_state,
        "ledger": ledger.state_dict(),
        "history": history,
        "rng": capture_rng(sampler),
    }


def restore_run(state: Mapping[str, Any], setup: RunSetup, sampler: np.random.Generator, ledger: ByteLedger) -> None:
    """Load a :func:`capture_run` state into a freshly built ``setup``; RNGs are restored last."""
    setup.strategy.load_state_dict(state["strategy"])
    for client in setup.clients:
        client.state = dict(state["clients"].get(client.client_id, {}))
    shared = setup.shared
    if "base_weights" in state["shared"]:
        restore_base_weights(shared.model, state["shared"]["base_weights"])
    shared.merged_tags = set(state["shared"]["merged_tags"])
    if state["shared"]["active_adapter"] != shared.active_adapter:
        use_adapter(shared.model, state["shared"]["active_adapter"])
        shared.active_adapter = state["shared"]["active_adapter"]
    ledger.load_state_dict(state["ledger"])
    restore_rng(state["rng"], sampler)
