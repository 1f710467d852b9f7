"""Flower run config (``[tool.flwr.app.config]``, ``flwr run --run-config``) -> ecolora settings.

Flower passes a flat ``{key: scalar}`` run config to both apps. Its keys map onto ecolora as:

==========================  =====================================================================
run-config key              meaning
==========================  =====================================================================
``config``                  ecolora YAML preset (``configs/smoke.yaml``); relative paths are looked
                            up in the working directory, the installed Flower App (FAB) directory
                            and the ecolora source checkout; ``""``: the built-in defaults
``method``, ``fed.rounds``,  every ecolora config key, flat (the same keys as ``--set``):
``data.source``, ...        ``flwr run . --run-config "method='fedit+ecolora' fed.rounds=2"``;
                            ``""`` (the default in pyproject.toml) keeps the preset's value; lists
                            as ``"q_proj,v_proj"`` or ``"[8, 4]"``
``overrides``               DEPRECATED: ``key=value`` overrides separated by ``;``
                            (``"method=fedit+ecolora;fed.rounds=2"``), applied before the flat keys
``out-dir``                 run directory written by the ServerApp (config.yaml, metrics.jsonl,
                            summary.json, adapter/, plots/); relative to the ServerApp's cwd
``round-timeout``           seconds the ServerApp waits for one round's replies
``node-wait``               seconds the ServerApp waits for ``fed.num_clients`` SuperNodes
``resume``                  ``true``: continue the run in ``out-dir`` from its last checkpoint
                            (``ecolora run --resume``; the config must be the checkpoint's)
``test-corrupt-partition``  TESTS ONLY: the partition whose ClientApp damages its reply (-1: none)
``test-corrupt-mode``       TESTS ONLY: ``bytes`` (garbled payload) or ``shape`` (a tensor missing)
==========================  =====================================================================

Both apps resolve the same keys, so server and clients always build the same :class:`RunConfig`.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ecolora.config import RunConfig, load_config

logger = logging.getLogger("ecolora")

__all__ = [
    "CORRUPT_MODES",
    "FlowerSettings",
    "config_keys",
    "config_keys_toml",
    "find_config_file",
    "resolve_settings",
    "split_overrides",
]

CORRUPT_MODES = ("bytes", "shape")


@dataclass(frozen=True)
class FlowerSettings:
    """Everything the ServerApp and ClientApp read from Flower's run config."""

    config: RunConfig
    out_dir: Path = field(
        default=Path("runs/flower"), metadata={"help": "Run directory of the ServerApp."}
    )
    round_timeout_s: float = field(
        default=600.0, metadata={"help": "Wait for one round's replies."}
    )
    node_wait_s: float = field(
        default=120.0, metadata={"help": "Wait for fed.num_clients SuperNodes."}
    )
    corrupt_partition: int = field(
        default=-1, metadata={"help": "TESTS ONLY: partition sending bad replies."}
    )
    corrupt_mode: str = field(default="bytes", metadata={"help": "TESTS ONLY: bytes or shape."})
    resume: bool = field(default=False, metadata={"help": "Continue out-dir's run from its last checkpoint."})

    def __post_init__(self) -> None:
        if self.round_timeout_s <= 0:
            raise ValueError(f"`round-timeout` must be > 0 seconds, got {self.round_timeout_s}.")
        if self.node_wait_s <= 0:
            raise ValueError(f"`node-wait` must be > 0 seconds, got {self.node_wait_s}.")
        if self.corrupt_mode not in CORRUPT_MODES:
            raise ValueError(
                f"`test-corrupt-mode` must be one of {', '.join(CORRUPT_MODES)}, got {self.corrupt_mode!r}."
            )


def find_config_file(name: str, search: list[Path] | None = None) -> Path:
    """Resolve a preset path: absolute as is; relative against cwd, app dirs and the checkout."""
    path = Path(name).expanduser()
    if path.is_absolute():
        if not path.is_file():
            raise ValueError(f"`config` file {path} does not exist.")
        return path
    candidates = search if search is not None else _search_dirs()
    for base in candidates:
        if (base / path).is_file():
            return base / path
    raise ValueError(
        f"`config` file {name!r} not found in {', '.join(str(c) for c in candidates)}; "
        "give an absolute path or run from the repository root."
    )


def _search_dirs() -> list[Path]:
    """cwd, Flower App directories Flower put on sys.path (they hold a pyproject.toml), the checkout."""
    dirs = [Path.cwd()]
    for entry in sys.path:
        p = Path(entry or ".")
        if (p / "pyproject.toml").is_file() and p not in dirs:
            dirs.append(p)
    checkout = Path(__file__).resolve().parents[3]  # src/ecolora/flower/settings.py -> repo root
    if (checkout / "configs").is_dir() and checkout not in dirs:
        dirs.append(checkout)
    return dirs


def split_overrides(text: str) -> list[str]:
    """``"a=1; b.c=2"`` -> ``["a=1", "b.c=2"]`` (empty parts dropped)."""
    return [part.strip() for part in text.split(";") if part.strip()]


def config_keys() -> list[str]:
    """Every ecolora config key, flat (``method``, ``fed.rounds``, ...): the run-config keys that
    map onto :class:`RunConfig` fields."""
    config = RunConfig()
    keys = []
    for top in dataclasses.fields(config):
        section = getattr(config, top.name)
        if dataclasses.is_dataclass(section):
            keys += [f"{top.name}.{f.name}" for f in dataclasses.fields(section)]
        else:
            keys.append(top.name)
    return keys


def config_keys_toml() -> str:
    """The ``[tool.flwr.app.config]`` lines that declare every config key with ``""`` (Flower
    accepts only declared run-config keys): ``python -m ecolora.flower.settings`` prints them."""
    sections: dict[str, list[str]] = {}
    for key in config_keys():
        section, _, name = key.rpartition(".")
        sections.setdefault(section, []).append(name)
    lines = [f'{name} = ""' for name in sections.pop("", [])]
    for section, names in sections.items():
        fields = ", ".join(f'{name} = ""' for name in names)
        lines.append(f"{section} = {{{fields}}}")
    return "\n".join(lines)


_APP_KEYS = ("config", "overrides", "out-dir", "round-timeout", "node-wait", "resume", "test-corrupt-partition",
             "test-corrupt-mode")


def resolve_settings(
    run_config: Mapping[str, Any], search: list[Path] | None = None
) -> FlowerSettings:
    """Build :class:`FlowerSettings` from Flower's flat run config (unknown keys are errors).

    Flat ecolora keys (``fed.rounds = 2``) override the preset; ``""`` leaves a key to the preset.
    """
    fields = set(config_keys())
    unknown = sorted(set(run_config) - set(_APP_KEYS) - fields)
    if unknown:
        raise ValueError(
            f"Unknown run-config key(s) {', '.join(unknown)}; valid keys: {', '.join(sorted(_APP_KEYS))} "
            f"and the ecolora config keys ({', '.join(sorted(fields)[:3])}, ...; see `ecolora run --help`)."
        )
    preset = str(run_config.get("config", "") or "")
    path = find_config_file(preset, search) if preset else None
    legacy = split_overrides(str(run_config.get("overrides", "") or ""))
    if legacy:
        flat = " ".join(f"{item.split('=', 1)[0].strip()}=..." for item in legacy)
        logger.warning("run-config `overrides` is deprecated; pass the keys flat: --run-config \"%s\"", flat)
    flat_overrides = [f"{key}={value}" for key, value in run_config.items() if key in fields and value != ""]
    config = load_config(path, legacy + flat_overrides)
    return FlowerSettings(
        config=config,
        out_dir=Path(str(run_config.get("out-dir", "runs/flower"))),
        round_timeout_s=float(run_config.get("round-timeout", 600.0)),
        node_wait_s=float(run_config.get("node-wait", 120.0)),
        corrupt_partition=int(run_config.get("test-corrupt-partition", -1)),
        corrupt_mode=str(run_config.get("test-corrupt-mode", "bytes")),
        resume=_flag("resume", run_config.get("resume", False)),
    )


def _flag(key: str, value: Any) -> bool:
    """A boolean run-config value: true/false (TOML), or the strings "true"/"false" (``--run-config``)."""
    if isinstance(value, bool):
        return value
    if str(value).lower() in ("true", "false"):
        return str(value).lower() == "true"
    raise ValueError(f"`{key}` must be true or false, got {value!r}.")


if __name__ == "__main__":  # pragma: no cover - prints the pyproject.toml lines
    sys.stdout.write(config_keys_toml() + "\n")
