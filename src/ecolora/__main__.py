"""``python -m ecolora`` is the ``ecolora`` command."""

from ecolora.cli import app

app(prog_name="ecolora")
