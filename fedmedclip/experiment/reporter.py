"""How the harness tells its caller what it is doing, without printing: the CLI supplies a console-backed one."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Protocol

ProgressCallback = Callable[[int, int], None]


class Reporter(Protocol):
    def message(self, text: str) -> None: ...

    def progress(self, description: str) -> AbstractContextManager[ProgressCallback]: ...


class SilentReporter:
    """The default: library calls stay quiet unless the caller asks for output."""

    def message(self, text: str) -> None:
        return None

    @contextmanager
    def _progress(self) -> Iterator[ProgressCallback]:
        yield lambda done, total: None

    def progress(self, description: str) -> AbstractContextManager[ProgressCallback]:
        return self._progress()
