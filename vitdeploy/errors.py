"""One error type for every problem a user can fix, and the exit codes scripts rely on."""
from __future__ import annotations

# Exit codes are part of the CLI contract: CI scripts branch on them.
EXIT_OK = 0
EXIT_REGRESSION = 1  # `compare`/`accuracy`: a threshold was crossed
EXIT_USAGE = 2  # bad input, bad flags, unusable files
EXIT_VERIFY_FAILED = 3  # an export/rewrite/precision check exceeded its tolerance
EXIT_ENGINE_SKIPPED = 4  # `build` did everything it could but TensorRT is absent
EXIT_INCONCLUSIVE = 5  # `compare`: the noise is too large to tell whether a threshold was crossed


class VitdeployError(Exception):
    """A problem with a one-line explanation and a fix; the CLI prints it without a traceback."""

    exit_code = EXIT_USAGE

    def __init__(self, message: str, hint: str | None = None, exit_code: int | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        if exit_code is not None:
            self.exit_code = exit_code

    def one_line(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class VerificationError(VitdeployError):
    """A numerical check failed: the artifact would not compute what the model computes."""

    exit_code = EXIT_VERIFY_FAILED
