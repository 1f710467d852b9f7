"""Start a SuperLink and SuperNodes on this machine and submit ``flwr run`` (loopback trials).

Used by the Flower integration tests and the timing benchmark in docs/flower.md; the commands it
runs are the ones docs/deploy.md prints for real machines. Every process is started in its own
session, remembered by PID, and stopped with its children (``Processes.stop_all``), also when the
caller fails. Runtime dependency installation is always disabled
(``FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1``): the SuperLink would otherwise ``uv sync``
the app and pull a CUDA torch.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ecolora.flower.certs import Certificates

logger = logging.getLogger("ecolora")

__all__ = [
    "FlowerProcess",
    "Processes",
    "flower_env",
    "flwr_run",
    "free_port",
    "register_supernode",
    "run_config_args",
    "simulate",
    "simulation_config",
    "write_connection",
]

_BIN = Path(
    sys.executable
).parent  # flower-superlink, flower-supernode and flwr live next to python


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def flower_env(flwr_home: Path) -> dict[str, str]:
    """Environment for every Flower process: private FLWR_HOME, no runtime dependency installs."""
    env = dict(os.environ)
    env.update(
        FLWR_HOME=str(flwr_home),
        FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION="1",
        FLWR_DISABLE_UPDATE_CHECK="1",
        PATH=f"{_BIN}{os.pathsep}{env.get('PATH', '')}",
    )
    return env


def write_connection(
    flwr_home: Path, name: str, address: str, root_certificates: Path | None = None
) -> None:
    """Add a SuperLink connection to ``$FLWR_HOME/config.toml`` (``flwr run . <name>``)."""
    flwr_home.mkdir(parents=True, exist_ok=True)
    path = flwr_home / "config.toml"
    text = (
        path.read_text(encoding="utf-8") if path.exists() else f'[superlink]\ndefault = "{name}"\n'
    )
    text += f'\n[superlink.{name}]\naddress = "{address}"\n'
    text += (
        f'root-certificates = "{root_certificates}"\n' if root_certificates else "insecure = true\n"
    )
    path.write_text(text, encoding="utf-8")


def run_config_args(run_config: Mapping[str, object]) -> list[str]:
    """``--run-config key=value`` arguments (TOML values; strings must not contain double quotes)."""
    args = []
    for key, value in run_config.items():
        if isinstance(value, str) and '"' in value:
            raise ValueError(
                f"run-config value for {key!r} must not contain double quotes, got {value!r}."
            )
        args += ["--run-config", f"{key}={json.dumps(value)}"]
    return args


@dataclass
class FlowerProcess:
    """A started Flower process, its log file and the command that started it."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    command: list[str]

    @property
    def pid(self) -> int:
        return int(self.popen.pid)

    def log(self) -> str:
        return (
            self.log_path.read_text(encoding="utf-8", errors="replace")
            if self.log_path.exists()
            else ""
        )

    def wait_for_log(self, pattern: str, timeout_s: float) -> bool:
        """True once ``pattern`` (a regex) appears in the log; False on timeout or exit."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if re.search(pattern, self.log()):
                return True
            if self.popen.poll() is not None:
                return bool(re.search(pattern, self.log()))
            time.sleep(0.2)
        return False

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM to this process's session (it and the children it spawned), SIGKILL if needed."""
        if self.popen.poll() is None:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(
                        self.pid, sig
                    )  # the process group this process leads (start_new_session)
                except ProcessLookupError:
                    break
                try:
                    self.popen.wait(timeout=timeout_s)
                    break
                except subprocess.TimeoutExpired:
                    continue
        else:
            try:  # the leader is gone; its children (SuperExec, ClientApps) may not be
                os.killpg(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.popen.wait(timeout=timeout_s)


@dataclass
class Processes:
    """The Flower processes one caller started; ``with Processes(...) as procs:`` stops them all."""

    workdir: Path
    flwr_home: Path
    started: list[FlowerProcess] = field(default_factory=list)

    def __enter__(self) -> Processes:
        self.workdir.mkdir(parents=True, exist_ok=True)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()

    def stop_all(self) -> None:
        for proc in reversed(self.started):
            proc.stop()

    def start(self, name: str, command: Sequence[str]) -> FlowerProcess:
        log_path = self.workdir / f"{name}.log"
        with log_path.open("wb") as log:
            popen = subprocess.Popen(
                list(command),
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                env=flower_env(self.flwr_home),
                start_new_session=True,
            )
        proc = FlowerProcess(name, popen, log_path, list(command))
        self.started.append(proc)
        logger.info("started %s (pid %d): %s", name, proc.pid, " ".join(command))
        return proc

    def superlink(
        self,
        port: int,
        certs: Certificates | None = None,
        node_auth: bool = False,
        simulation: bool = False,
    ) -> FlowerProcess:
        """``flower-superlink`` on 127.0.0.1:port (TLS with ``certs``, else ``--insecure``)."""
        cmd = [
            str(_BIN / "flower-superlink"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--disable-runtime-dependency-installation",
        ]
        if certs is None:
            cmd.append("--insecure")
        else:
            cmd += [
                "--ssl-ca-certfile",
                str(certs.ca_cert),
                "--ssl-certfile",
                str(certs.server_cert),
                "--ssl-keyfile",
                str(certs.server_key),
            ]
        cmd += ["--enable-supernode-auth"] if node_auth else []
        cmd += ["--simulation"] if simulation else []
        proc = self.start("superlink", cmd)
        if not proc.wait_for_log(r"Uvicorn running on", 60):
            raise RuntimeError(f"SuperLink did not start; its log:\n{proc.log()[-3000:]}")
        return proc

    def supernode(
        self,
        name: str,
        superlink: str,
        port: int,
        partition_id: int,
        num_partitions: int,
        root_certificates: Path | None = None,
        private_key: Path | None = None,
        max_retries: int | None = None,
    ) -> FlowerProcess:
        """``flower-supernode`` for one partition (its Runtime API on 127.0.0.1:port)."""
        cmd = [
            str(_BIN / "flower-supernode"),
            "--superlink",
            superlink,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--node-config",
            f"partition-id={partition_id} num-partitions={num_partitions}",
        ]
        cmd += (
            ["--root-certificates", str(root_certificates)] if root_certificates else ["--insecure"]
        )
        cmd += ["--auth-supernode-private-key", str(private_key)] if private_key else []
        cmd += ["--max-retries", str(max_retries)] if max_retries is not None else []
        return self.start(name, cmd)


def register_supernode(
    flwr_home: Path, connection: str, public_key: Path, timeout_s: float = 60
) -> int:
    """``flwr supernode register <key> <connection>``; returns the new node id."""
    proc = subprocess.run(
        [str(_BIN / "flwr"), "supernode", "register", str(public_key), connection],
        capture_output=True,
        text=True,
        env=flower_env(flwr_home),
        timeout=timeout_s,
        check=False,
    )
    match = re.search(r"SuperNode (\d+) registered", proc.stdout)
    if proc.returncode != 0 or match is None:
        raise RuntimeError(
            f"flwr supernode register failed ({proc.returncode}): {proc.stdout}{proc.stderr}"
        )
    return int(match.group(1))


def flwr_run(
    app_dir: Path,
    connection: str,
    flwr_home: Path,
    run_config: Mapping[str, object],
    federation_config: Mapping[str, object] | None = None,
    timeout_s: float = 600,
) -> subprocess.CompletedProcess[str]:
    """``flwr run <app_dir> <connection> --stream``: returns when the run ends (or times out).

    Flower's CLI exits 0 even when the run failed: check the run directory, not the exit code.
    """
    cmd = [
        str(_BIN / "flwr"),
        "run",
        str(app_dir),
        connection,
        "--stream",
        *run_config_args(run_config),
    ]
    for key, value in (federation_config or {}).items():
        cmd += ["--federation-config", f"{key}={json.dumps(value)}"]
    return subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        env=flower_env(flwr_home),
        timeout=timeout_s,
        check=False,
        cwd=app_dir,
    )


def simulation_config(
    num_supernodes: int, num_cpus: int | None = None, num_gpus: float | None = None
) -> dict[str, object]:
    """``flwr run --federation-config`` keys of Flower's simulation backend.

    ``num_gpus`` is each ClientApp actor's share of a GPU (Ray ``client-resources``): 0.5 puts two
    actors on each GPU, 1.0 one; Ray then sets the actor's ``CUDA_VISIBLE_DEVICES`` so that
    ``train.device=auto`` (or ``cuda``) is that GPU. ``num_cpus``: CPU cores per actor.
    """
    if num_gpus is not None and num_gpus < 0:
        raise ValueError(f"num_gpus (client-resources) must be >= 0, got {num_gpus}.")
    config: dict[str, object] = {"num-supernodes": num_supernodes}
    if num_cpus is not None:
        config["client-resources-num-cpus"] = num_cpus
    if num_gpus is not None:
        config["client-resources-num-gpus"] = float(num_gpus)
    return config


def simulate(
    app_dir: Path,
    work_dir: Path,
    run_config: Mapping[str, object],
    num_supernodes: int,
    timeout_s: float = 600,
    num_gpus: float | None = None,
) -> tuple[subprocess.CompletedProcess[str], str, float]:
    """``flwr run`` on a private simulation-mode SuperLink (Ray, ``num_supernodes`` virtual nodes,
    each ClientApp actor with ``num_gpus`` of a GPU when given, see :func:`simulation_config`).

    FLWR_HOME and the process logs live under ``work_dir``; the SuperLink is stopped on return.
    Returns ``flwr run``'s result, the SuperLink's log and the wall time in seconds (judge the run by
    its run directory: ``flwr run`` exits 0 even when the run failed).
    """
    home = work_dir / "flwr-home"
    start = time.perf_counter()
    with Processes(work_dir / "procs", home) as procs:
        port = free_port()
        superlink = procs.superlink(port, simulation=True)
        write_connection(home, "sim", f"127.0.0.1:{port}")
        federation = simulation_config(num_supernodes, num_gpus=num_gpus)
        proc = flwr_run(app_dir, "sim", home, run_config, federation, timeout_s=timeout_s)
        wall_s = time.perf_counter() - start
        return proc, superlink.log(), wall_s
