"""The ``ecolora`` command line: thin typer commands over the library (no algorithm code here)."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.logging import RichHandler

from ecolora.config import ConfigError, RunConfig, load_config
from ecolora.methods import method_help
from ecolora.rundir import (
    RunDirError,
    RunStopped,
    SetupError,
    claim_run_dir,
    clear_stop,
    request_stop,
    stop_requested,
)

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_show_locals=False, help=(
    "ecolora: communication-efficient federated fine-tuning of LLMs with LoRA.\n\n"
    "Start with `ecolora run --config configs/smoke.yaml` (a minute on a laptop) or "
    "`ecolora run` (the quickstart preset, downloads SmolLM2-135M once)."
))
bench_app = typer.Typer(help="Benchmarks (results belong in docs/).")
app.add_typer(bench_app, name="bench")
console = Console(stderr=True)

PRESETS = Path(__file__).resolve().parents[2] / "configs"


def _setup_logging(verbose: bool) -> None:
    if not verbose:  # libraries' deprecation notices are for developers, not in normal output
        warnings.filterwarnings("ignore", category=FutureWarning)
    logging.basicConfig(
        level=logging.INFO if not verbose else logging.DEBUG,
        format="%(message)s",
        handlers=[RichHandler(console=console, show_path=False, markup=False)],
        force=True,
    )
    for noisy in ("transformers", "datasets", "huggingface_hub", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


VERBOSE_HELP = "Debug-level log lines (per-client details)."
DEBUG_HELP = "Show the full traceback of an error instead of one `error:` line."
# Expected failures: one `error: <cause>; <fix>` line and exit code 2 (--debug: the traceback).
EXPECTED_ERRORS = (ConfigError, SetupError, RunDirError, FileNotFoundError, PermissionError, ImportError)
OPTIONAL_EXTRAS = {"flwr": "flower", "ns": "ns3", "tensorboard": "tensorboard", "lm_eval": "lm-eval"}


def _fail(message: str) -> NoReturn:
    console.print("[bold red]error:[/] ", end="")
    console.print(" ".join(message.split()), markup=False, soft_wrap=True, highlight=False)
    raise typer.Exit(code=2)


def error_line(exc: BaseException) -> str:
    """The one-line message of an expected failure (a missing optional package names its extra)."""
    if isinstance(exc, ImportError) and exc.name and "pip install" not in str(exc):
        top = (exc.name or "").split(".")[0]
        extra = OPTIONAL_EXTRAS.get(top)
        fix = f"pip install 'ecolora[{extra}]'" if extra else f"pip install {top}"
        return f"the optional package `{top}` is not installed; {fix}"
    return " ".join(str(exc).split()) or type(exc).__name__


@contextmanager
def expected_failures(debug: bool) -> Iterator[None]:
    """Report :data:`EXPECTED_ERRORS` as one line with exit code 2; ``debug`` re-raises them."""
    try:
        yield
    except EXPECTED_ERRORS as exc:
        if debug:
            raise
        _fail(error_line(exc))


@app.command(epilog="Methods (--set method=NAME, registered in ecolora.methods):\n\n" + method_help().replace("\n", "\n\n"))
def run(
    config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML preset (default: configs/quickstart.yaml).")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Run directory, new or empty (default: runs/<name>-<time>).")] = None,
    overrides: Annotated[list[str] | None, typer.Option("--set", "-s", help="Override a key: --set fed.rounds=5 (repeatable).")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help=VERBOSE_HELP)] = False,
    resume: Annotated[Path | None, typer.Option("--resume", help="Continue the run in DIR from its last checkpoint (config from DIR/config.yaml).")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="If --out is not empty, move it aside to OUT.old-<time> (never deleted) and start over.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help=DEBUG_HELP)] = False,
    force: Annotated[bool, typer.Option("--force", help="Train a model above 1B parameters on the CPU anyway (same as --set train.force=true).")] = False,
) -> None:
    """Run a federated fine-tuning experiment and write its run directory.

    Ctrl-C (or SIGTERM) finishes the current round, writes its checkpoint and exits with 130;
    `ecolora run --resume DIR` continues from there. A second Ctrl-C abandons the round.
    """
    _setup_logging(verbose)
    with expected_failures(debug):
        cfg, out_dir = _resolve_run(config, out, [*(overrides or []), *(["train.force=true"] if force and resume is None else [])], resume, overwrite)
        moved = claim_run_dir(out_dir, "resume" if resume else "overwrite" if overwrite else "new")
        if moved is not None:
            console.print(f"Moved the old {out_dir} aside to {moved}", markup=False)
        summary = _run_until_stopped(cfg, out_dir, resume is not None)
    console.print(f"Run directory: [bold]{out_dir}[/]")
    typer.echo(json.dumps({k: summary[k] for k in ("method", "final_eval_loss", "upload_bytes", "download_bytes", "wall_s")}))


def _resolve_run(config: Path | None, out: Path | None, overrides: list[str], resume: Path | None,
                 overwrite: bool) -> tuple[RunConfig, Path]:
    """The run's config and directory from the options (``--resume DIR``: both from DIR)."""
    if resume is not None:
        if config is not None or overrides or out is not None:
            _fail("--resume takes the config and the run directory from DIR; drop --config, --set and --out.")
        if overwrite:
            _fail("--resume continues DIR and --overwrite moves it aside; pass one of them.")
        if not (resume / "config.yaml").is_file():
            _fail(f"{resume} has no config.yaml; is it a run directory?")
        config, out = resume / "config.yaml", resume
    path = config if config is not None else PRESETS / "quickstart.yaml"
    cfg = load_config(path, overrides)
    stamp = f"{datetime.now():%Y%m%d-%H%M%S}"
    return cfg, out or Path("runs") / f"{Path(path).stem}-{cfg.method.replace('+', '-')}-{stamp}"


def _on_stop_signal(signum: int, frame: FrameType | None) -> None:
    if stop_requested():
        raise KeyboardInterrupt  # second signal: abandon the round now
    request_stop()
    console.print("[yellow]Stopping after this round (its checkpoint is written); press Ctrl-C again to abandon the round.[/]")


def _run_until_stopped(cfg: RunConfig, out_dir: Path, resume: bool) -> dict[str, object]:
    """Run with progress bars; on SIGINT/SIGTERM stop cleanly, say how to resume, exit 130."""
    from ecolora.report.progress import run_with_progress

    clear_stop()
    previous = {sig: signal.signal(sig, _on_stop_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    how = f"resume with: ecolora run --resume {out_dir}"
    try:
        return run_with_progress(cfg, out_dir, console, resume=resume)
    except RunStopped as stop:
        note = "" if stop.checkpointed else " (fed.checkpoint_every is 0: it starts over)"
        console.print(f"stopped after {stop.unit} {stop.step}; {how}{note}", markup=False)
    except KeyboardInterrupt:
        console.print(f"stopped during a round; {how} (from its last checkpoint)", markup=False)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    raise typer.Exit(code=130)


@app.command()
def compare(
    run_dirs: Annotated[list[Path], typer.Argument(help="Run directories to compare.")],
    fmt: Annotated[str, typer.Option("--format", help="markdown or json.")] = "markdown",
    baseline: Annotated[Path | None, typer.Option(help="Run to compute ratios against (default: the first).")] = None,
    target_eval_loss: Annotated[float | None, typer.Option(help="Report rounds/params/bytes/time to first reach this eval loss.")] = None,
    scenario: Annotated[str, typer.Option(help="Link scenario for the time columns (uplink/downlink Mbps).")] = "1/5",
    plot: Annotated[Path | None, typer.Option(help="Write quality-vs-bytes plot here (PNG).")] = None,
    seeds: Annotated[bool, typer.Option("--seeds", help="Group runs that differ only by seed: mean ± sd per group; time to target: to --target-eval-loss, else to the mean final loss of --baseline's group (default: the first); --plot draws eval-loss curves with sd bands against rounds (PLOT) and communication time under --scenario (PLOT_time).")] = False,
) -> None:
    """Compare runs in the paper's Table 1 / Table 3 form."""
    from ecolora.report.compare import compare_runs, format_markdown

    if fmt not in ("markdown", "json"):
        _fail(f"--format must be markdown or json, got {fmt!r}.")
    if seeds:
        _compare_seeds(run_dirs, fmt, scenario, plot, baseline, target_eval_loss)
        return
    try:
        rows = compare_runs(run_dirs, baseline=baseline, target_eval_loss=target_eval_loss, scenario=scenario)
    except (FileNotFoundError, ValueError) as exc:
        _fail(str(exc))
    if plot is not None:
        from ecolora.report.plots import plot_quality_vs_bytes

        plot_quality_vs_bytes(run_dirs, plot)
    typer.echo(json.dumps(rows, indent=2) if fmt == "json" else format_markdown(rows))


def _compare_seeds(run_dirs: list[Path], fmt: str, scenario: str, plot: Path | None,
                   baseline: Path | None, target_eval_loss: float | None) -> None:
    from ecolora.report.seeds import format_seed_table, plot_seed_curves, summarize_seeds

    try:
        rows = summarize_seeds(run_dirs, scenario=scenario, baseline=baseline, target_eval_loss=target_eval_loss)
        if plot is not None:
            plot_seed_curves(run_dirs, plot)
            plot_seed_curves(run_dirs, plot.with_name(f"{plot.stem}_time{plot.suffix}"), scenario=scenario)
    except (FileNotFoundError, ValueError) as exc:
        _fail(str(exc))
    typer.echo(json.dumps(rows, indent=2) if fmt == "json" else format_seed_table(rows))


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

    profiles: list[Any] = list(scenario or [])
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
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON rows instead of the table.")] = False,
    repeats: Annotated[int | None, typer.Option(help="Timing repeats per cell, best kept (default 3; --quick: 1).")] = None,
    values: Annotated[int, typer.Option("--values", help="LoRA values to code (default: Llama2-7B q/v rank 16, 8,388,608).")] = 8_388_608,
    quick: Annotated[bool, typer.Option("--quick", help="One case, densities 0.1 and 0.5, one repeat, zstd-3 only: seconds, not minutes.")] = False,
) -> None:
    """Codec speed and size on a Llama2-7B-shaped LoRA (r=16, q/v, 32 layers), with a column legend."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ecolora.bench.codec import (
        QUICK,
        format_legend,
        format_table,
        lora_shape_for,
        run_codec_bench,
    )

    try:
        num_layers, hidden = lora_shape_for(values)
    except ValueError as exc:
        _fail(str(exc))
    options = dict(QUICK) if quick else {}
    if repeats is not None:
        options["repeats"] = repeats
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task(f"codec bench ({num_layers * 4 * 16 * hidden:,} values)", total=None)
        rows = run_codec_bench(num_layers=num_layers, hidden=hidden, **options,
                               progress=lambda done, total: bar.update(task, completed=done, total=total))
    typer.echo(json.dumps(rows, indent=2) if as_json else f"{format_table(rows)}\n\n{format_legend(rows)}")


@bench_app.command("train")
def bench_train(
    config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML preset (default: SmolLM2-135M, fedit+ecolora, 3 clients, batch 4 x 96 tokens, the in-tree data file).")] = None,
    overrides: Annotated[list[str] | None, typer.Option("--set", "-s", help="Override a key: --set model.name=llama2-7b-shape (repeatable).")] = None,
    rounds: Annotated[int, typer.Option(help="Timed rounds (after the warm-up).")] = 1,
    warmup_rounds: Annotated[int, typer.Option(help="Untimed rounds first (allocator, kernels, caches).")] = 1,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Also write the JSON report here.")] = None,
) -> None:
    """Local-training speed (tokens/s), peak memory and one round split into phases."""
    from ecolora.bench.train import format_report, run_train_bench
    from ecolora.config import ConfigError, load_config

    _setup_logging(False)
    try:
        cfg = load_config(config or PRESETS / "bench_train.yaml", overrides or [])
        report = run_train_bench(cfg, rounds=rounds, warmup_rounds=warmup_rounds)
    except (ConfigError, ValueError) as exc:
        _fail(str(exc))
    if out is not None:
        out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    typer.echo(json.dumps(report, indent=2) if as_json else format_report(report))


@app.command("eval")
def evaluate(
    adapter: Annotated[Path | None, typer.Option(help="PEFT adapter folder (a run's adapter/); omit for the base model.")] = None,
    suite: Annotated[str, typer.Option(help="bigbench-mc, arc, mmlu, mc, preference, loss, heldout (the run's own held-out split), or lm-eval:TASK[,TASK] (needs lm-eval).")] = "bigbench-mc",
    model: Annotated[str | None, typer.Option(help="Base model (default: from the run's config.yaml, else smollm2-135m).")] = None,
    limit: Annotated[int | None, typer.Option(help="Items per task.")] = None,
    path: Annotated[str | None, typer.Option(help="Local file for suites in a hub schema.")] = None,
    batch_size: Annotated[int, typer.Option(help="Items (multiple choice, each question computed once for all its choices) or examples per forward pass.")] = 8,
    device: Annotated[str, typer.Option(help="auto (cuda if available), cpu, cuda, cuda:N or mps.")] = "auto",
    save: Annotated[Path | None, typer.Option(help="JSONL file that keeps each task's result as it finishes; run again with the same file to resume (multiple-choice suites).")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    debug: Annotated[bool, typer.Option("--debug", help=DEBUG_HELP)] = False,
) -> None:
    """Score a base model or a fine-tuned adapter on an evaluation suite."""
    _setup_logging(False)
    from rich.progress import (
        BarColumn,
        Progress,
        TaskID,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from ecolora.eval.adapter import evaluate_adapter
    from ecolora.eval.display import format_result

    columns = (TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn(), TimeRemainingColumn())
    with expected_failures(debug), Progress(*columns, console=console, transient=True) as bar:
        tasks: dict[str, TaskID] = {}

        def show(label: str, done: int, total: int) -> None:  # one bar per task, by tokens scored
            if label not in tasks:
                tasks[label] = bar.add_task(label, total=total)
            bar.update(tasks[label], completed=done, visible=done < total)

        try:
            result = evaluate_adapter(
                adapter=adapter, suite=suite, model=model, limit=limit, path=path,
                batch_size=batch_size, device=device, save=save, progress=show,
            )
        except ValueError as exc:
            _fail(str(exc))
    typer.echo(json.dumps(result, indent=2) if as_json else format_result(result))


def _entry() -> None:  # pragma: no cover
    os.environ.setdefault("FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION", "1")
    app()
    sys.exit(0)
