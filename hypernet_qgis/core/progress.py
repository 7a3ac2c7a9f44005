"""Progress reporting and cancellation, shared by the CLI and the QGIS algorithms."""

from __future__ import annotations

import sys
from typing import Protocol

from .errors import Cancelled


class Feedback(Protocol):
    """What long-running core functions report to and ask of their caller."""

    def set_progress(self, fraction: float) -> None:
        """Overall progress, 0..1."""

    def info(self, message: str) -> None:
        """A line for the log."""

    def is_cancelled(self) -> bool:
        """True once the user asked to stop."""


class NullFeedback:
    """Reports nothing and never cancels."""

    def set_progress(self, fraction: float) -> None:
        pass

    def info(self, message: str) -> None:
        pass

    def is_cancelled(self) -> bool:
        return False


class StderrFeedback(NullFeedback):
    """Progress and messages on stderr, for the CLI."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self._last = -1

    def set_progress(self, fraction: float) -> None:
        percent = int(max(0.0, min(1.0, fraction)) * 100)
        # a line per 5 % step crossed, showing where progress is (33 %, not nothing, after the first of 3 epochs)
        if not self.quiet and percent // 5 != self._last // 5 and percent > self._last:
            self._last = percent
            print(f"  {percent:3d}%", file=sys.stderr, flush=True)

    def info(self, message: str) -> None:
        if not self.quiet:
            print(message, file=sys.stderr, flush=True)


class SubFeedback(NullFeedback):
    """Maps a sub-task's 0..1 progress onto [start, end] of a parent's progress."""

    def __init__(self, parent: Feedback, start: float, end: float) -> None:
        self.parent, self.start, self.end = parent, start, end

    def set_progress(self, fraction: float) -> None:
        self.parent.set_progress(self.start + (self.end - self.start) * max(0.0, min(1.0, fraction)))

    def info(self, message: str) -> None:
        self.parent.info(message)

    def is_cancelled(self) -> bool:
        return self.parent.is_cancelled()


def check_cancelled(feedback: Feedback | None) -> None:
    """Raise Cancelled when the caller asked to stop."""
    if feedback is not None and feedback.is_cancelled():
        raise Cancelled("Cancelled by the user; no output was written.")
