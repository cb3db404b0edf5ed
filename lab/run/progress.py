"""Trial-level progress a user can see, in the terminal and in `ray job logs`.

`execute` counts a shard's trials as they finish inside the shard, not only when the shard ends: a work function
reports through `advance(n)` (the concept-injection work passes it to `Runner.run` as its batch callback), which
goes to the driver — in process directly, from a Ray actor through a small counter actor the driver polls. The driver
shows the count with trials/s and an ETA: a tqdm bar when its stream is a terminal, else a plain line at most every
`$LAB_PROGRESS_SECONDS` seconds (default 5) when the count has moved, and a "still running" line after 30 s without
one, so `ray job logs` and a log file show progress too. Counts only: the rows a shard returns are what is stored,
so reporting changes no result.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TextIO

HEARTBEAT_S = 30.0

_sink: Callable[[int], None] | None = None  # where `advance` sends this shard's running count (set around a shard)
_done = 0


def advance(n: int) -> None:
    """`n` more trials of the running shard are done (a work function's batch callback); nothing outside a shard."""
    global _done
    if _sink is not None and n > 0:
        _done += n
        _sink(_done)


@contextmanager
def reporting(sink: Callable[[int], None] | None) -> Iterator[None]:
    """Send `advance` counts of the shard run inside to `sink(done_in_shard)`."""
    global _sink, _done
    prev = _sink, _done
    _sink, _done = sink, 0
    try:
        yield
    finally:
        _sink, _done = prev


@dataclass(frozen=True)
class Reporting:
    """`work(lm, shard, ctx)` with `advance` wired to `counter.report(shard_id, n)` (a Ray actor): picklable, so it
    travels to a replica as the function it runs."""

    work: Callable[..., Any]
    counter: Any
    shard_id: int

    def __call__(self, lm: Any, shard: Any, ctx: Any) -> Any:
        with reporting(lambda n: self.counter.report.remote(self.shard_id, n)):
            return self.work(lm, shard, ctx)


class Counter:
    """The driver's mailbox for in-shard counts (made a Ray actor with no CPU by `execute`)."""

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}

    def report(self, shard_id: int, n: int) -> None:
        self.counts[shard_id] = n  # a retried shard starts again from 0

    def snapshot(self) -> dict[int, int]:
        return dict(self.counts)


def interval_s() -> float:
    """Seconds between plain progress lines (`$LAB_PROGRESS_SECONDS`, default 5)."""
    try:
        return max(float(os.environ.get("LAB_PROGRESS_SECONDS", "5")), 0.0)
    except ValueError:
        return 5.0


def _duration(s: float) -> str:
    s = int(round(s))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


class Progress:
    """Trials done of `total`, shown from `start()` (the time before it, model loading and `prepare`, is not counted
    in the rate): a tqdm bar on a terminal, else plain lines on `stream` (stderr by default)."""

    def __init__(self, total: int, desc: str = "trials", enabled: bool = True, stream: TextIO | None = None):
        self.total, self.desc, self.enabled = total, desc, enabled and total > 0
        self.stream = stream or sys.stderr
        self.done = 0
        self.t0: float | None = None
        self.bar: Any = None
        self.last_line = 0.0
        self.every = interval_s()

    def start(self) -> None:
        self.t0 = self.last_line = time.perf_counter()
        if not self.enabled:
            return
        if _is_tty(self.stream):
            from tqdm.auto import tqdm

            self.bar = tqdm(total=self.total, desc=self.desc, unit=" trials", file=self.stream)
        else:
            self._line(f"{self.desc}: 0/{self.total} started")

    def set(self, done: int) -> None:
        """The number of trials done so far (finished shards plus what running shards reported)."""
        done = min(max(done, self.done), self.total)  # never backwards (a retried shard reports from 0 again)
        moved, self.done = done - self.done, done
        if not self.enabled or self.t0 is None:
            return
        if self.bar is not None:
            if moved:
                self.bar.update(moved)
            return
        now = time.perf_counter()
        if (moved and now - self.last_line >= self.every) or now - self.last_line >= max(HEARTBEAT_S, self.every):
            self._line(self.status(now) + ("" if moved else " (still running)"))

    def tick(self) -> None:
        """Called while waiting: a heartbeat line if nothing was printed for a while."""
        self.set(self.done)

    def status(self, now: float | None = None) -> str:
        """'trials 120/540 (22 %), 3.10 trials/s, ETA 2 min 15 s'."""
        el = (now or time.perf_counter()) - (self.t0 or 0.0)
        rate = self.done / el if el > 0 else 0.0
        eta = _duration((self.total - self.done) / rate) if rate > 0 else "unknown"
        pct = 100 * self.done // max(self.total, 1)
        return f"{self.desc}: {self.done}/{self.total} ({pct} %), {rate:.2f} trials/s, ETA {eta}"

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.enabled and self.t0 is not None:
            el = time.perf_counter() - self.t0
            rate = self.done / el if el > 0 else 0.0
            how = "done in" if self.done == self.total else "stopped after"
            self._line(f"{self.desc}: {self.done}/{self.total} {how} {_duration(el)} ({rate:.2f} trials/s)")

    def _line(self, text: str) -> None:
        print(text, file=self.stream, flush=True)
        self.last_line = time.perf_counter()


def _is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
