"""The real `vitdeploy` entry point under Click's test runner, for fixtures of any scope.

`vitdeploy.cli.main` maps errors to exit codes itself (one line, exit 2, ...); the adapter hands
that exit code to the runner, so tests see exactly what a user's shell would.
"""
from __future__ import annotations

import sys


class _Entry:
    name = "vitdeploy"

    def __init__(self, fn):
        self.fn = fn

    def main(self, args=None, prog_name=None, standalone_mode=True, **extra):
        rc = 0
        try:
            self.fn(args)
        except SystemExit as e:
            rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        sys.exit(rc)


def invoke(args):
    """Run `vitdeploy ARGS...`; the result has .exit_code and .output (stdout and stderr)."""
    from click.testing import CliRunner

    from vitdeploy.cli import main

    return CliRunner().invoke(_Entry(main), [str(a) for a in args], catch_exceptions=False)
