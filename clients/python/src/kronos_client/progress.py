"""A progress bar of items done: tqdm's when it is installed (``pip install kronos-client[progress]``), else
a plain line on stderr now and then."""

from __future__ import annotations

import sys
import time
from typing import Any, Protocol


class Bar(Protocol):
    def update_to(self, done: int, total: int | None = None) -> None: ...

    def close(self) -> None: ...


class _Quiet:
    def update_to(self, done: int, total: int | None = None) -> None:
        pass

    def close(self) -> None:
        pass


class _Tqdm:
    def __init__(self, tqdm: Any, total: int | None, desc: str) -> None:
        self.bar = tqdm(total=total, desc=desc, unit="item", dynamic_ncols=True)

    def update_to(self, done: int, total: int | None = None) -> None:
        if total is not None and total != self.bar.total:
            self.bar.total = total
        if done != self.bar.n:
            self.bar.update(done - self.bar.n)

    def close(self) -> None:
        self.bar.close()


class _Text:
    """``desc: 40/500 items`` on stderr, at most every ``every`` seconds and at the end."""

    def __init__(self, total: int | None, desc: str, every: float = 5.0) -> None:
        self.total, self.desc, self.every = total, desc, every
        self.done, self.shown, self.last = 0, -1, 0.0

    def update_to(self, done: int, total: int | None = None) -> None:
        self.done, self.total = done, total if total is not None else self.total
        if time.monotonic() - self.last >= self.every or (self.total is not None and done >= self.total):
            self._show()

    def _show(self) -> None:
        if self.done != self.shown:
            total = "?" if self.total is None else self.total
            print(f"{self.desc}: {self.done}/{total} items", file=sys.stderr, flush=True)
            self.shown, self.last = self.done, time.monotonic()

    def close(self) -> None:
        self._show()


def progress_bar(enabled: bool, total: int | None, desc: str) -> Bar:
    if not enabled:
        return _Quiet()
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return _Text(total, desc)
    return _Tqdm(tqdm, total, desc)
