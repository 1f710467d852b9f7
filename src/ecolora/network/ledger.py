"""The byte ledger: exact bytes and value counts of every message, per round, client and direction.

The ledger is fed by the transport (``ecolora.sim.transport`` in one process, the Flower adapter
on many machines) with the length of what really crossed the boundary, like Flower's
``message_size_mod``: a message's size is its packed tensor payload plus its JSON-encoded config.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["ByteLedger", "Direction", "LedgerEntry"]

Direction = Literal["up", "down"]


@dataclass(frozen=True)
class LedgerEntry:
    server_round: int
    client: int
    direction: Direction
    num_bytes: int
    num_params: int
    channel: str = "global"  # "global" (client <-> server) or e.g. "group" for intra-group traffic


@dataclass
class ByteLedger:
    entries: list[LedgerEntry] = field(default_factory=list)

    def record(
        self,
        server_round: int,
        client: int,
        direction: Direction,
        num_bytes: int,
        num_params: int,
        channel: str = "global",
    ) -> None:
        if direction not in ("up", "down"):
            raise ValueError(f"direction must be 'up' or 'down', got {direction!r}")
        if num_bytes < 0 or num_params < 0:
            raise ValueError(f"byte and param counts must be >= 0, got {num_bytes}, {num_params}")
        self.entries.append(LedgerEntry(server_round, client, direction, num_bytes, num_params, channel))

    def round_totals(self, server_round: int) -> dict[str, int]:
        """Totals of one round: upload/download bytes and params over all its clients."""
        totals = {"upload_bytes": 0, "download_bytes": 0, "upload_params": 0, "download_params": 0}
        for e in self.entries:
            if e.server_round == server_round:
                side = "upload" if e.direction == "up" else "download"
                totals[f"{side}_bytes"] += e.num_bytes
                totals[f"{side}_params"] += e.num_params
        return totals

    def per_client(self, server_round: int) -> dict[int, dict[str, int]]:
        """Per-client bytes and params of one round (for the network time model)."""
        rows: dict[int, dict[str, int]] = defaultdict(
            lambda: {"upload_bytes": 0, "download_bytes": 0, "upload_params": 0, "download_params": 0}
        )
        for e in self.entries:
            if e.server_round == server_round:
                side = "upload" if e.direction == "up" else "download"
                rows[e.client][f"{side}_bytes"] += e.num_bytes
                rows[e.client][f"{side}_params"] += e.num_params
        return dict(rows)

    def totals(self) -> dict[str, int]:
        totals = {"upload_bytes": 0, "download_bytes": 0, "upload_params": 0, "download_params": 0}
        for e in self.entries:
            side = "upload" if e.direction == "up" else "download"
            totals[f"{side}_bytes"] += e.num_bytes
            totals[f"{side}_params"] += e.num_params
        return totals

    def state_dict(self) -> dict[str, Any]:
        return {"entries": [e.__dict__ for e in self.entries]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.entries = [LedgerEntry(**e) for e in state["entries"]]
