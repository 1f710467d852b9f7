"""Figure-3-style plot: training time split into computation and communication.

Liu et al. (arXiv 2506.02001), Figure 3, compares a baseline with EcoLoRA under the four link
scenarios, each bar stacking computation time under communication time. Here one group of bars
per scenario, one bar per run label, with ``compute_s`` (solid) and ``comm_s`` (hatched) stacked.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

__all__ = ["plot_time_breakdown"]


def plot_time_breakdown(
    results: Mapping[str, Mapping[str, Mapping[str, float]]],
    path: str | Path,
    *,
    title: str | None = None,
    unit: str = "h",
) -> None:
    """Write a stacked bar chart to ``path`` (format from its suffix: .png, .pdf, .svg).

    ``results``: ``{run_label: {scenario: {"compute_s": ..., "comm_s": ...}}}``, e.g. the
    ``total`` entries of :func:`ecolora.network.runs.simulate_run` for a baseline and EcoLoRA.
    Scenarios are shown in first-seen order. ``unit``: ``"s"``, ``"min"`` or ``"h"``.
    """
    import matplotlib
    from matplotlib.figure import Figure  # no pyplot: no global state, renders with Agg

    scale = {"s": 1.0, "min": 60.0, "h": 3600.0}
    if unit not in scale:
        raise ValueError(f"unit must be one of s, min, h; got {unit!r}")
    if not results:
        raise ValueError("results must hold at least one run")
    labels = list(results)
    scenarios: list[str] = []
    for label in labels:
        for key, entry in results[label].items():
            missing = {"compute_s", "comm_s"} - set(entry)
            if missing:
                raise ValueError(f"results[{label!r}][{key!r}] lacks {sorted(missing)}")
            if key not in scenarios:
                scenarios.append(key)
    width = 0.8 / len(labels)
    colors = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    fig = Figure(figsize=(1.6 + 1.3 * len(scenarios) * max(1, len(labels) / 2), 3.6))
    ax = fig.add_subplot()
    for j, label in enumerate(labels):
        xs, comp, comm = [], [], []
        for i, key in enumerate(scenarios):
            times = results[label].get(key)
            if times is None:
                continue
            xs.append(i - 0.4 + width * (j + 0.5))
            comp.append(times["compute_s"] / scale[unit])
            comm.append(times["comm_s"] / scale[unit])
        color = colors[j % len(colors)]
        ax.bar(xs, comp, width, color=color, alpha=0.45, edgecolor=color,
               label=f"{label}: computation")
        ax.bar(xs, comm, width, bottom=comp, color=color, hatch="//", edgecolor="white",
               label=f"{label}: communication")
    ax.set_xticks(range(len(scenarios)))
    ax.set_xticklabels([f"{k} Mbps" for k in scenarios])
    ax.set_xlabel("uplink/downlink")
    ax.set_ylabel(f"training time ({unit})")
    if title:
        ax.set_title(title)
    ax.legend(fontsize="small", frameon=False)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150)
