"""The `processfork` console script and `python -m processfork`: run the bundled CLI.

The wheel ships the C++ CLI (``processfork/bin/processfork``) next to the package; both
entry points replace the Python process with it (``os.execv``), so ``serve`` runs the
daemon with its own signal handling and exit codes (docs/cli.md).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

__all__ = ["cli_path", "main"]


def cli_path() -> str:
    """The CLI binary: ``$PF_CLI`` if set, else the one bundled with the package.

    Raises:
        FileNotFoundError: neither exists.
    """
    env = os.environ.get("PF_CLI")
    if env:
        return env
    bundled = Path(__file__).resolve().parent / "bin" / "processfork"
    if bundled.is_file():
        return str(bundled)
    raise FileNotFoundError(
        "processfork CLI binary not found: set PF_CLI or reinstall the package (pip install .)")


def main(argv: list[str] | None = None) -> None:
    """Execs the CLI with ``argv`` (default: ``sys.argv[1:]``); does not return."""
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        path = cli_path()
    except FileNotFoundError as e:
        print(f"processfork: {e}", file=sys.stderr)
        raise SystemExit(127) from None
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(path, [path, *args])
