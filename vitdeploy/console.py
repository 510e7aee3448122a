"""Terminal output shared by every command: one line per stage with its wall time, progress for long work.

In a terminal a stage shows a spinner (updated with its sub-phases) and a progress bar
for counted work, then one success line. In a CI log or a pipe there is nothing to
redraw, so a stage prints a start line, each sub-phase a line, and counted work a count
line every few seconds; the success line is the same. Only one live display is shown at
a time: a progress bar pauses its stage's spinner, so no blank lines are left behind.
"""
from __future__ import annotations

import contextlib
import sys
import time
from typing import Callable, Iterator

from rich.console import Console


def _width() -> int | None:
    """Pipes and CI logs get 140 columns instead of rich's 80, so tables are not truncated."""
    import os

    if os.environ.get("COLUMNS") or sys.stdout.isatty():
        return None
    return 140


console = Console(highlight=False, soft_wrap=True, width=_width())
err_console = Console(stderr=True, highlight=False, soft_wrap=True, width=_width())

COUNT_EVERY_S = 5.0  # without a terminal: a count line at most this often


NEUTRAL_MARK = "•"  # a stage that finished but whose figure is not judged (below a threshold, random weights)


class Stage:
    """Collects the detail a stage wants printed on its success line."""

    def __init__(self, name: str):
        self.name = name
        self.detail = ""
        self.skipped: str | None = None
        self.skip_word = "skipped"
        self.neutral = False
        self.seconds = 0.0
        self._status = None

    def skip(self, why: str, word: str = "skipped") -> None:
        """Finish with `– name  word: why` (`word` when the command says "skipped" elsewhere, so it says it once)."""
        self.skipped, self.skip_word = why, word

    def unjudged(self) -> None:
        """Finish with a neutral mark instead of ✔: the step ran, its figure earns no check mark."""
        self.neutral = True


_active: list[Stage] = []


def interactive() -> bool:
    return console.is_terminal


@contextlib.contextmanager
def stage(name: str) -> Iterator[Stage]:
    """Time a pipeline stage and print `✔ name  detail  1.2 s` when it succeeds (`•` when unjudged;
    a start line first, in logs)."""
    st = Stage(name)
    if _quiet[0]:
        yield st
        return
    start = time.perf_counter()
    _active.append(st)
    try:
        if interactive():
            with console.status(f"[bold]{name}[/]…", spinner="dots") as status:
                st._status = status
                yield st
        else:
            console.print(f"[dim]…[/] [bold]{name:<10}[/] started")
            yield st
    finally:
        _active.pop()
    st.seconds = time.perf_counter() - start
    if st.skipped is not None:
        console.print(f"[yellow]–[/] [bold]{name:<10}[/] {st.skip_word}: {st.skipped}")
    else:
        mark = f"[dim]{NEUTRAL_MARK}[/]" if st.neutral else "[green]✔[/]"
        console.print(f"{mark} [bold]{name:<10}[/] {st.detail}  [dim]{st.seconds:.1f} s[/]")


def phase(text: str) -> None:
    """A sub-phase of the running stage: the spinner's text in a terminal, one line in a log (nothing outside a stage)."""
    st = _active[-1] if _active else None
    if _quiet[0] or st is None:
        return
    if st._status is not None:
        st._status.update(f"[bold]{st.name}[/] {text}…")
    elif not interactive():
        console.print(f"  [dim]{st.name}: {text}[/]")


@contextlib.contextmanager
def progress(total: int, description: str, show: bool = True, unit: str = "images") -> Iterator[Callable[[int], None]]:
    """Yield `advance(n)`. A terminal gets a bar with a rate on stderr (stdout stays clean for JSON),
    pausing the stage's spinner; a log gets `description: done/total unit` lines every few seconds."""
    if not show or _quiet[0]:
        yield lambda n=1: None
        return
    st = _active[-1] if _active else None
    if not err_console.is_terminal:
        state = {"done": 0, "last": time.perf_counter(), "printed": False}
        started = state["last"]

        def advance(n: int = 1) -> None:
            state["done"] += n
            now = time.perf_counter()
            if now - state["last"] >= COUNT_EVERY_S and state["done"] < total:
                rate = state["done"] / max(now - started, 1e-9)
                err_console.print(f"  {description}: {state['done']}/{total} {unit} ({rate:.1f} {unit}/s)")
                state["last"], state["printed"] = now, True

        yield advance
        elapsed = time.perf_counter() - started
        if state["printed"] or elapsed >= 1.0:
            err_console.print(f"  {description}: {state['done']}/{total} {unit} in {elapsed:.1f} s")
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn
    from rich.text import Text

    class Rate(ProgressColumn):
        def render(self, task) -> Text:
            speed = task.finished_speed or task.speed
            return Text(f"{speed:.1f} {unit}/s" if speed else f"– {unit}/s", style="dim")

    bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), Rate(),
                   TimeElapsedColumn(), console=err_console, transient=True)
    status = st._status if st is not None else None
    if status is not None:
        status.stop()  # one live display at a time: the spinner comes back when the bar is gone
    try:
        with bar:
            task = bar.add_task(description, total=total)
            yield lambda n=1: bar.advance(task, n)
    finally:
        if status is not None:
            status.start()


_quiet = [0]


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Run nested stages without their lines, spinners, sub-phases or bars: a command that runs another
    on the side (bench building an artifact) reports it in one line of its own."""
    _quiet[0] += 1
    try:
        yield
    finally:
        _quiet[0] -= 1


@contextlib.contextmanager
def to_stderr() -> Iterator[None]:
    """Route everything printed on `console` to stderr, so stdout carries only a JSON document."""
    saved = console._file
    console._file = sys.stderr
    try:
        yield
    finally:
        console._file = saved


def next_steps(commands: list[str]) -> None:
    """The copy-pasteable block that ends a successful run."""
    if not commands:
        return
    from rich.markup import escape

    console.print("\n[bold]Next:[/]")
    for c in commands:
        console.print(f"  {escape(c)}")
