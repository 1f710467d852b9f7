"""The ``ecolora`` command line: thin typer commands over the library (no algorithm code here)."""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.logging import RichHandler

app = typer.Typer(add_completion=False, no_args_is_help=False, pretty_exceptions_show_locals=False, help=(
    "ecolora: communication-efficient federated fine-tuning of LLMs with LoRA.\n\n"
    "With no command, `ecolora run` runs the quickstart preset."
))
bench_app = typer.Typer(help="Benchmarks (results belong in docs/).")
app.add_typer(bench_app, name="bench")
console = Console(stderr=True)

PRESETS = Path(__file__).resolve().parents[2] / "configs"


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if not verbose else logging.DEBUG,
        format="%(message)s",
        handlers=[RichHandler(console=console, show_path=False, markup=False)],
        force=True,
    )
    for noisy in ("transformers", "datasets", "huggingface_hub", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _fail(message: str) -> None:
    console.print("[bold red]error:[/] ", end="")
    console.print(message, markup=False, soft_wrap=True, highlight=False)
    raise typer.Exit(code=2)


@app.callback(invoke_without_command=True)
def main(ctx: typer.Context) -> None:
    if ctx.invoked_subcommand is None:
        ctx.invoke(run)


@app.command()
def run(
    config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML preset (default: configs/quickstart.yaml).")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Run directory (default: runs/<name>-<time>).")] = None,
    overrides: Annotated[list[str] | None, typer.Option("--set", "-s", help="Override a key: --set fed.rounds=5 (repeatable).")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
    resume: Annotated[Path | None, typer.Option("--resume", help="Continue the run in DIR from its last checkpoint (config from DIR/config.yaml).")] = None,
) -> None:
    """Run a federated fine-tuning experiment and write its run directory."""
    from ecolora.config import ConfigError, load_config

    _setup_logging(verbose)
    if resume is not None:
        if config is not None or overrides or out is not None:
            _fail("--resume takes the config and the run directory from DIR; drop --config, --set and --out.")
        if not (resume / "config.yaml").is_file():
            _fail(f"{resume} has no config.yaml; is it a run directory?")
        config, out = resume / "config.yaml", resume
    path = config if config is not None else PRESETS / "quickstart.yaml"
    try:
        cfg = load_config(path, overrides or [])
    except ConfigError as exc:
        _fail(str(exc))
    out_dir = out or Path("runs") / f"{Path(path).stem}-{cfg.method.replace('+', '-')}-{datetime.now():%Y%m%d-%H%M%S}"
    from ecolora.report.progress import round_table, run_with_progress

    if resume is not None:
        from ecolora.sim.checkpoint import ResumeError
        from ecolora.sim.runner import run_experiment

        try:
            summary = run_experiment(cfg, out_dir, resume=True)
        except ResumeError as exc:
            _fail(str(exc))
        console.print(round_table(out_dir))
    else:
        summary = run_with_progress(cfg, out_dir, console)
    console.print(f"Run directory: [bold]{out_dir}[/]")
    typer.echo(json.dumps({k: summary[k] for k in ("method", "final_eval_loss", "upload_bytes", "download_bytes", "wall_s")}))


@app.command()
def compare(
    run_dirs: Annotated[list[Path], typer.Argument(help="Run directories to compare.")],
    fmt: Annotated[str, typer.Option("--format", help="markdown or json.")] = "markdown",
    baseline: Annotated[Path | None, typer.Option(help="Run to compute ratios against (default: the first).")] = None,
    target_eval_loss: Annotated[float | None, typer.Option(help="Report rounds/params/bytes/time to first reach this eval loss.")] = None,
    scenario: Annotated[str, typer.Option(help="Link scenario for the time columns (uplink/downlink Mbps).")] = "1/5",
    plot: Annotated[Path | None, typer.Option(help="Write quality-vs-bytes plot here (PNG).")] = None,
) -> None:
    """Compare runs in the paper's Table 1 / Table 3 form."""
    from ecolora.report.compare import compare_runs, format_markdown

    if fmt not in ("markdown", "json"):
        _fail(f"--format must be markdown or json, got {fmt!r}.")
    try:
        rows = compare_runs(run_dirs, baseline=baseline, target_eval_loss=target_eval_loss, scenario=scenario)
    except (FileNotFoundError, ValueError) as exc:
        _fail(str(exc))
    if plot is not None:
        from ecolora.report.plots import plot_quality_vs_bytes

        plot_quality_vs_bytes(run_dirs, plot)
    typer.echo(json.dumps(rows, indent=2) if fmt == "json" else format_markdown(rows))


@app.command()
def netsim(
    run_dir: Annotated[Path, typer.Argument(help="A run directory (metrics.jsonl).")],
    scenario: Annotated[list[str] | None, typer.Option(help="Preset uplink/downlink Mbps, e.g. 1/5 (repeatable).")] = None,
    uplink_mbps: Annotated[float | None, typer.Option()] = None,
    downlink_mbps: Annotated[float | None, typer.Option()] = None,
    latency_ms: Annotated[float, typer.Option()] = 50.0,
    backend: Annotated[str, typer.Option(help="analytic or ns3.")] = "analytic",
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Communication and round time of an existing run under simulated links."""
    from ecolora.network import LinkProfile, simulate_run

    profiles: list = list(scenario or [])
    if uplink_mbps is not None or downlink_mbps is not None:
        if uplink_mbps is None or downlink_mbps is None:
            _fail("--uplink-mbps and --downlink-mbps go together.")
        try:
            profiles.append(LinkProfile(uplink_mbps=uplink_mbps, downlink_mbps=downlink_mbps, latency_ms=latency_ms))
        except ValueError as exc:
            _fail(str(exc))
    if not profiles:
        profiles = ["0.2/1", "1/5", "2/10", "5/25"]
    if not (run_dir / "metrics.jsonl").is_file():
        _fail(f"{run_dir} has no metrics.jsonl; is it a run directory?")
    try:
        result = simulate_run(run_dir, profiles, backend=backend)
    except (ValueError, ImportError) as exc:
        _fail(str(exc))
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    from ecolora.report.compare import format_netsim

    typer.echo(format_netsim(result))


@bench_app.command("codec")
def bench_codec(
    as_json: Annotated[bool, typer.Option("--json")] = False,
    repeats: Annotated[int, typer.Option()] = 3,
) -> None:
    """Codec speed and size on a Llama2-7B-shaped LoRA (r=16, q/v, 32 layers)."""
    from ecolora.bench.codec import format_table, run_codec_bench

    rows = run_codec_bench(repeats=repeats)
    typer.echo(json.dumps(rows, indent=2) if as_json else format_table(rows))


@app.command("eval")
def evaluate(
    adapter: Annotated[Path | None, typer.Option(help="PEFT adapter folder (a run's adapter/); omit for the base model.")] = None,
    suite: Annotated[str, typer.Option(help="bigbench-mc, arc, mmlu, preference, heldout.")] = "bigbench-mc",
    model: Annotated[str | None, typer.Option(help="Base model (default: from the run's config.yaml, else smollm2-135m).")] = None,
    limit: Annotated[int | None, typer.Option(help="Items per task.")] = None,
    path: Annotated[str | None, typer.Option(help="Local file for suites in a hub schema.")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Score a base model or a fine-tuned adapter on an evaluation suite."""
    _setup_logging(False)
    from ecolora.eval.adapter import evaluate_adapter

    try:
        result = evaluate_adapter(adapter=adapter, suite=suite, model=model, limit=limit, path=path)
    except (FileNotFoundError, ValueError) as exc:
        _fail(str(exc))
    typer.echo(json.dumps(result, indent=2) if as_json else "\n".join(f"{k}: {v}" for k, v in result.items()))


def _entry() -> None:  # pragma: no cover
    os.environ.setdefault("FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION", "1")
    app()
    sys.exit(0)
