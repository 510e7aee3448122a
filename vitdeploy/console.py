"""Terminal output shared by every command: one success line per stage, with its wall time."""
from __future__ import annotations

import contextlib
import time
from typing import Iterator

from rich.console import Console

def _width() -> int | None:
    """Pipes and CI logs get 140 columns instead of rich's 80, so tables are not truncated."""
    import os
    import sys

    if os.environ.get("COLUMNS") or sys.stdout.isatty():
        return None
    return 140


console = Console(highlight=False, soft_wrap=True, width=_width())
err_console = Console(stderr=True, highlight=False, soft_wrap=True, width=_width())


NEUTRAL_MARK = "•"  # a stage that finished but whose figure is not judged (below a threshold, random weights)


class Stage:
    """Collects the detail a stage wants printed on its success line."""

    def __init__(self, name: str):
        self.name = name
        self.detail = ""
        self.skipped: str | None = None
        self.neutral = False
        self.seconds = 0.0

    def skip(self, why: str) -> None:
        self.skipped = why

    def unjudged(self) -> None:
        """Finish with a neutral mark instead of ✔: the step ran, its figure earns no check mark."""
        self.neutral = True


@contextlib.contextmanager
def stage(name: str) -> Iterator[Stage]:
    """Time a pipeline stage and print `✔ name  detail  1.2 s` when it succeeds (`•` when unjudged)."""
    st = Stage(name)
    start = time.perf_counter()
    with console.status(f"[bold]{name}[/]…", spinner="dots"):
        yield st
    st.seconds = time.perf_counter() - start
    if st.skipped is not None:
        console.print(f"[yellow]–[/] [bold]{name:<10}[/] skipped: {st.skipped}")
    else:
        mark = f"[dim]{NEUTRAL_MARK}[/]" if st.neutral else "[green]✔[/]"
        console.print(f"{mark} [bold]{name:<10}[/] {st.detail}  [dim]{st.seconds:.1f} s[/]")


def next_steps(commands: list[str]) -> None:
    """The copy-pasteable block that ends a successful run."""
    if not commands:
        return
    console.print("\n[bold]Next:[/]")
    for c in commands:
        console.print(f"  {c}")
