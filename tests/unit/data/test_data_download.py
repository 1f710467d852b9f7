"""`pip_download` for the bigbench sdist: the command it runs, reuse of the cache, failures."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ecolora import cache
from ecolora.cache import AssetError, pip_download


def _fake_pip(calls: list[list[str]], *, returncode: int = 0):  # noqa: ANN202
    def run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        calls.append(cmd)
        if returncode == 0:
            folder = Path(cmd[cmd.index("-d") + 1])
            (folder / "bigbench-1.0.0.tar.gz").write_bytes(b"sdist")
        return subprocess.CompletedProcess(cmd, returncode, "", "ERROR: no network")

    return run


def test_sdist_download_runs_patched_pip_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ECOLORA_CACHE", str(tmp_path))
    calls: list[list[str]] = []
    monkeypatch.setattr(cache.subprocess, "run", _fake_pip(calls))
    path = pip_download("bigbench==1.0.0", "bigbench-1.0.0", sdist=True)
    assert path == tmp_path / "downloads" / "bigbench-1.0.0.tar.gz"
    assert path.read_bytes() == b"sdist"
    (cmd,) = calls
    assert cmd[:2] == [sys.executable, "-c"]
    assert "check_pypi_direct_references" in cmd[2]
    assert cmd[3:] == [
        "download", "--no-deps", "-q", "-d", cmd[7], "--no-binary", ":all:", "bigbench==1.0.0"
    ]  # fmt: skip
    assert pip_download("bigbench==1.0.0", "bigbench-1.0.0", sdist=True) == path
    assert len(calls) == 1  # reused from the cache, pip not run again


def test_patched_pip_entry_still_runs_pip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The `-c` program is a working `python -m pip` (checked with `--version`, no download)."""
    monkeypatch.setenv("ECOLORA_CACHE", str(tmp_path))
    calls: list[list[str]] = []
    real_run = subprocess.run
    monkeypatch.setattr(cache.subprocess, "run", _fake_pip(calls))
    pip_download("bigbench==1.0.0", "bigbench-1.0.0", sdist=True)
    result = real_run([*calls[0][:3], "--version"], capture_output=True, text=True, check=False)
    assert result.returncode == 0 and result.stdout.startswith("pip ")


def test_failed_download_raises_asset_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ECOLORA_CACHE", str(tmp_path))
    monkeypatch.setattr(cache.subprocess, "run", _fake_pip([], returncode=1))
    with pytest.raises(
        AssetError, match=r"`pip download bigbench==1.0.0` failed \(exit 1\).*no network"
    ):
        pip_download("bigbench==1.0.0", "bigbench-1.0.0", sdist=True)
