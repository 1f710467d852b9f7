"""ecolora messages <-> Flower records, and client state <-> ``Context.state``.

An ecolora :class:`~ecolora.strategies.base.Message` crosses Flower as exactly the two byte strings
the in-process transport measures (:mod:`ecolora.sim.transport`):

* the codec payload ``Strategy.pack(message)`` as one ``Array(dtype="uint8", shape=(n,),
  stype="ecolora/<codec format version>", data=payload)`` in the ArrayRecord ``"payload"``;
* the JSON header ``Strategy.pack_config(config, num_examples, metrics)`` (round, segment id,
  densities k_t^A / k_t^B, download mode, sample count, training metrics) as bytes under
  ``"json"`` in the ConfigRecord ``"header"``, next to readable copies of the round, the partition id
  and (EcoLoRA) the segment and densities.

So a message's ledger size, ``len(payload) + len(header)``, is the same number on both engines.
Flower's own envelope (metadata, record names, protobuf framing, the readable copies) is not
counted, as the in-process ledger does not count a network's framing either.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from ecolora import codec
from ecolora.sim.transport import PayloadError, WireMessage, decode_message, encode_message

__all__ = [
    "CARRIED_STATE",
    "CARRY_RECORD",
    "PARTITION_QUERY",
    "STATE_REQUEST",
    "PayloadError",
    "WireMessage",
    "decode_message",
    "encode_message",
    "from_recorddict",
    "is_exact",
    "load_state",
    "payload_stype",
    "record_int",
    "save_state",
    "to_recorddict",
]

PAYLOAD_RECORD, HEADER_RECORD, METRICS_RECORD = "payload", "header", "metrics"
PARTITION_QUERY = "partition"  # ConfigRecord of the ServerApp's discovery query and its reply
STATE_TENSORS, STATE_TREE = "ecolora.state.tensors", "ecolora.state.tree"
# A client state travelling inside a message (HierFedLoRA's leader role runs in the ServerApp and its
# trainer on the SuperNode, so the leader's state moves between them; ecolora.flower.executor).
CARRIED_STATE = "carried."  # prefix of the state records in a message (save_state/load_state)
CARRY_RECORD = "carry"  # ConfigRecord: {"return": bool}, the reply must carry the updated state back
STATE_REQUEST = "state-request"  # ConfigRecord of a QUERY that asks a node for its client state
_MIRRORED = {
    "round": "server-round",
    "segment": "segment",
    "density_a": "density-a",
    "density_b": "density-b",
}


def payload_stype() -> str:
    """Serialization type of the payload Array: the codec's name and format version."""
    return f"ecolora/{codec.FORMAT_VERSION}"


def to_recorddict(
    wire: WireMessage,
    config: Mapping[str, Any],
    partition_id: int,
    metrics: Mapping[str, float] | None = None,
    exact: bool = False,
) -> RecordDict:
    """A fresh RecordDict for one message (never shared between messages); ``exact``: the payload
    was packed with ``encode_message(..., exact=True)`` and the reply must be too."""
    array = Array(
        dtype="uint8", shape=(len(wire.payload),), stype=payload_stype(), data=bytes(wire.payload)
    )
    header: dict[str, Any] = {"json": bytes(wire.header), "partition-id": int(partition_id)}
    if exact:
        header["exact"] = True
    for key, name in _MIRRORED.items():
        if (
            key in config
            and isinstance(config[key], (int, float))
            and not isinstance(config[key], bool)
        ):
            header[name] = config[key]
    records: dict[str, Any] = {
        PAYLOAD_RECORD: ArrayRecord({"payload": array}),
        HEADER_RECORD: ConfigRecord(header),
    }
    if metrics is not None:
        records[METRICS_RECORD] = MetricRecord(
            {k: float(v) for k, v in metrics.items() if math.isfinite(float(v))}
        )
    return RecordDict(records)


def from_recorddict(content: RecordDict) -> tuple[WireMessage, int]:
    """The payload, header and partition id of a message; raises :class:`PayloadError` when absent."""
    try:
        array = content.array_records[PAYLOAD_RECORD]["payload"]
        header = content.config_records[HEADER_RECORD]
    except KeyError as exc:
        raise PayloadError(
            f"Message lacks the ecolora records (ArrayRecord 'payload' with Array 'payload', "
            f"ConfigRecord 'header'); it has {sorted(content)}."
        ) from exc
    if array.stype != payload_stype():
        raise PayloadError(
            f"Payload stype is {array.stype!r}, expected {payload_stype()!r} (codec format version)."
        )
    if array.dtype != "uint8" or tuple(array.shape) != (len(array.data),):
        raise PayloadError(
            f"Payload Array must be uint8 of shape ({len(array.data)},), got {array.dtype} {tuple(array.shape)}."
        )
    raw_header, partition = header.get("json"), header.get("partition-id")
    if (
        not isinstance(raw_header, bytes)
        or not isinstance(partition, int)
        or isinstance(partition, bool)
    ):
        raise PayloadError(
            "ConfigRecord 'header' must hold bytes 'json' and an int 'partition-id'."
        )
    return WireMessage(payload=bytes(array.data), header=raw_header), partition


def record_int(value: object, what: str) -> int:
    """An int read from a record (bool is not one); :class:`PayloadError` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise PayloadError(f"{what} must be an int, got {value!r}.")
    return value


def is_exact(content: RecordDict) -> bool:
    """Whether a message was packed exactly (:func:`to_recorddict`)."""
    header = content.config_records.get(HEADER_RECORD)
    return bool(header is not None and header.get("exact", False))


# ---- client state <-> Context.state ---------------------------------------------------------------
def save_state(target: RecordDict, state: Mapping[str, Any], prefix: str = "") -> None:
    """Store a strategy's client state (nested dicts/lists of tensors and JSON values) in records.

    Tensors go to an ArrayRecord (numpy ``.npy``, exact), the structure to a ConfigRecord as JSON.
    """
    tensors: dict[str, Array] = {}
    tree = _encode(state, tensors)
    target[prefix + STATE_TENSORS] = ArrayRecord(tensors)
    target[prefix + STATE_TREE] = ConfigRecord({"json": json.dumps(tree)})


def load_state(source: RecordDict, prefix: str = "") -> dict[str, Any]:
    """Inverse of :func:`save_state`; an empty dict when nothing was stored yet."""
    if prefix + STATE_TREE not in source:
        return {}
    tree = json.loads(str(source.config_records[prefix + STATE_TREE]["json"]))
    arrays = source.array_records[prefix + STATE_TENSORS]
    state = _decode(tree, arrays)
    if not isinstance(state, dict):
        raise PayloadError(f"Stored client state must be a dict, got {type(state).__name__}.")
    return state


def _encode(value: Any, tensors: dict[str, Array]) -> Any:
    if isinstance(value, torch.Tensor):
        key = str(len(tensors))
        t = value.detach().cpu().contiguous()
        stored = t.float() if t.dtype == torch.bfloat16 else t  # bf16 is exact in fp32
        tensors[key] = Array(stored.numpy())
        return {"t": key, "dtype": str(t.dtype).removeprefix("torch.")}
    if isinstance(value, np.ndarray):
        key = str(len(tensors))
        tensors[key] = Array(np.ascontiguousarray(value))
        return {"n": key}
    if isinstance(value, Mapping):
        return {"d": [[_encode_key(k), _encode(v, tensors)] for k, v in value.items()]}
    if isinstance(value, (list, tuple)):
        return {"l" if isinstance(value, list) else "u": [_encode(v, tensors) for v in value]}
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return {"v": value}
    raise TypeError(
        f"Client state holds a {type(value).__name__}; only tensors, arrays, dicts, lists and JSON scalars can be stored."
    )


def _encode_key(key: Any) -> Any:
    if key is None or isinstance(key, (bool, int, float, str)):
        return key
    raise TypeError(f"Client state dict keys must be JSON scalars, got {type(key).__name__}.")


def _decode(node: Any, arrays: ArrayRecord) -> Any:
    if "t" in node:
        t = torch.from_numpy(arrays[node["t"]].numpy().copy())
        return t.to(getattr(torch, node["dtype"]))
    if "n" in node:
        return arrays[node["n"]].numpy().copy()
    if "d" in node:
        return {k: _decode(v, arrays) for k, v in node["d"]}
    if "l" in node:
        return [_decode(v, arrays) for v in node["l"]]
    if "u" in node:
        return tuple(_decode(v, arrays) for v in node["u"])
    return node["v"]
