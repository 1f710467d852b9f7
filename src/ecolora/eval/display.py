"""Plain-text display of an evaluation result (``ecolora eval`` without ``--json``)."""

from __future__ import annotations

from typing import Any

__all__ = ["format_result"]


def format_result(result: dict[str, Any]) -> str:
    """Plain text of an evaluation result: a headline, the scores, one line per subset or task."""
    head = f"suite {result.get('suite')} ({result.get('kind')}) on {result.get('model', '?')}"
    if result.get("adapter"):
        head += f" + {result['adapter']}"
    lines = [head]
    skip = {"suite", "kind", "model", "adapter", "subsets", "tasks", "eval_s"}
    scores = [f"{k} {_number(v)}" for k, v in result.items() if k not in skip]
    lines.append("  " + " | ".join(scores + [f"{float(result.get('eval_s', 0.0)):.1f} s"]))
    for title, table in (("subset", result.get("subsets")), ("task", result.get("tasks"))):
        if isinstance(table, dict) and table:
            width = max(len(str(name)) for name in table)
            lines.append(f"  {title}s:")
            for name, row in table.items():
                cells = " | ".join(f"{k} {_number(v)}" for k, v in row.items())
                lines.append(f"    {str(name).ljust(width)}  {cells}")
    return "\n".join(lines)


def _number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)
