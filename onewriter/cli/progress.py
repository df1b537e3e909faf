"""Live progress of a long run on stderr: a rich progress bar on a terminal when the
``rich`` extra is installed, one updating line on a terminal without it, and a line
every few seconds into a pipe or a file.

Nothing redraws by itself (rich's refresh thread is off): the run calls :meth:`update`
from its own loop a few times a second, so showing progress costs the run next to
nothing.
"""

from __future__ import annotations

import math
import sys
import time
from typing import TYPE_CHECKING, TextIO

from .tables import rich_console

if TYPE_CHECKING:
    from rich.progress import Progress


class LiveProgress:
    """One task's progress: ``completed`` out of ``total`` (``None``: no bar), and a text."""

    def __init__(
        self,
        label: str,
        total: float | None,
        *,
        out: TextIO | None = None,
        plain: bool = False,
        every: float = 5.0,
    ) -> None:
        self.label = label
        self.out = out or sys.stderr
        self.every = every
        self.tty = bool(getattr(self.out, "isatty", lambda: False)())
        self._last = -math.inf  # the first update is shown at once
        self._text = ""
        self._bar: Progress | None = None
        self._closed = False
        console = None if plain else rich_console(self.out)
        if console is not None:
            from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn

            columns = [TextColumn("{task.description}"), BarColumn(), TaskProgressColumn()]
            self._bar = Progress(
                *columns,
                TextColumn("{task.fields[text]}"),
                console=console,
                auto_refresh=False,
            )
            self._task = self._bar.add_task(label, total=total, text="")
            self._bar.start()

    def update(self, completed: float, text: str) -> None:
        """Show ``completed`` and ``text`` (into a pipe, at most every ``every`` s)."""
        if self._closed:
            return
        self._text = text
        if self._bar is not None:
            self._bar.update(self._task, completed=completed, text=text)
            self._bar.refresh()
            return
        now = time.monotonic()
        if self.tty:
            self.out.write(f"\r\x1b[K{self.label}: {text}")
        elif now - self._last >= self.every:
            self.out.write(f"{self.label}: {text}\n")
        else:
            return
        self._last = now
        self.out.flush()

    def close(self, final: str | None = None) -> None:
        """Stop showing; ``final`` (else the last text) stays as one line."""
        if self._closed:
            return
        self._closed = True
        text = final if final is not None else self._text
        if self._bar is not None:
            self._bar.update(self._task, text=text)
            self._bar.refresh()
            self._bar.stop()
            return
        if self.tty:
            self.out.write("\r\x1b[K")
        self.out.write(f"{self.label}: {text}\n")
        self.out.flush()
