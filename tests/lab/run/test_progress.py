"""Trial-level progress: counts reach the driver per generation batch, before the shard that holds them is stored,
as plain lines with trials/s and an ETA when the stream is not a terminal (what `ray job logs` shows)."""

from __future__ import annotations

import re

import pytest

from lab.run import store
from tests.conftest import dust_sweep


class Recorder:
    """A non-terminal stream that notes, for each progress line, how many shards were stored when it was printed."""

    def __init__(self, out):
        self.out, self.lines, self.buf = out, [], ""

    def isatty(self):
        return False

    def write(self, text):
        self.buf += text
        while "\n" in self.buf:
            line, self.buf = self.buf.split("\n", 1)
            self.lines.append((line, len(store.shard_files(self.out)) if self.out.exists() else 0))

    def flush(self):
        pass


def _cfg(tmp_path, num_actors, max_new):
    from lab.run.parallel import FanOutConfig

    runner = FanOutConfig(num_actors=num_actors, cpus_per_actor=1, threads=1, batch_size=2, shard_size=6)
    return dust_sweep(tmp_path, 2, max_new, runner)


LINE = re.compile(r"^trials: (\d+)/6 \((\d+) %\), (\d+\.\d\d) trials/s, ETA (.+)$")


def test_progress_lines_per_batch_before_the_shard_is_stored(embedded, tmp_path, monkeypatch):
    """6 trials (2 injections, 2 controls, 2 random-vector) in one shard, 2 rows per batch: a line after each batch,
    all three before the shard is written, each with a rate and an ETA; then one closing line."""
    import sys

    from lab.experiments.concept_injection import run_sweep

    rec = Recorder(tmp_path / "out")
    monkeypatch.setenv("LAB_PROGRESS_SECONDS", "0")
    monkeypatch.setattr(sys, "stderr", rec)
    res = run_sweep(_cfg(tmp_path, 0, 4), progress=True, lm=embedded)
    assert res["new"] == 6
    text = [line for line, _ in rec.lines]
    assert text[0] == "trials: 0/6 started"
    moving = [(LINE.match(line), shards) for line, shards in rec.lines[1:-1]]
    assert [(int(m[1]), int(m[2])) for m, _ in moving] == [(2, 33), (4, 66), (6, 100)]
    assert [shards for _, shards in moving] == [0, 0, 0]  # every count arrived before the shard was stored
    assert all(float(m[3]) > 0 for m, _ in moving) and moving[-1][0][4] == "0 s"  # a rate; nothing left at the end
    assert (
        re.fullmatch(r"trials: 6/6 done in (\d+ min )?\d+ s \(\d+\.\d\d trials/s\)", text[-1]) and rec.lines[-1][1] == 1
    )
    assert len(text) == 5


def test_progress_without_a_model_flows_from_the_work_function(embedded, tmp_path, monkeypatch):
    """`advance` is all a work function needs: counts inside the shard, clipped to the plan, never backwards."""
    import io

    from lab.config import ModelConfig
    from lab.run.experiment import execute
    from lab.run.parallel import FanOutConfig
    from lab.run.progress import Progress, advance

    class T:
        def __init__(self, i):
            self.trial_id = f"t{i}"

    def work(lm, shard, ctx):
        for _ in shard:
            advance(1)
        return [{"trial_id": t.trial_id} for t in shard]

    buf = io.StringIO()
    monkeypatch.setenv("LAB_PROGRESS_SECONDS", "0")
    monkeypatch.setattr("sys.stderr", buf)
    out = execute(
        [T(i) for i in range(5)], tmp_path / "o", ModelConfig(), FanOutConfig(num_actors=0, shard_size=2), work
    )
    assert out.new == 5
    counts = [int(m[1]) for m in re.finditer(r"^trials: (\d+)/5 \(", buf.getvalue(), re.M)]
    assert counts == [1, 2, 3, 4, 5]
    stream = io.StringIO()
    p = Progress(4, stream=stream)
    p.start()
    p.set(3)
    p.set(1)  # a retried shard reports from 0 again: the count does not go back
    assert p.done == 3 and p.status().startswith("trials: 3/4 (75 %)")
    p.close()  # interrupted: not "done"
    assert re.fullmatch(r"trials: 3/4 stopped after \d+ s \(\d+\.\d\d trials/s\)", stream.getvalue().splitlines()[-1])


@pytest.mark.slow
def test_progress_reaches_the_driver_from_a_ray_actor(tmp_path, monkeypatch):
    """On a Ray actor the per-batch counts travel through the counter actor: the driver prints a count between 0 and
    the shard's size before the shard is stored."""
    import sys

    from lab.experiments.concept_injection import run_sweep

    rec = Recorder(tmp_path / "out")
    monkeypatch.setenv("LAB_PROGRESS_SECONDS", "0")
    monkeypatch.setattr(sys, "stderr", rec)
    assert run_sweep(_cfg(tmp_path, 1, 32), progress=True)["new"] == 6
    partial = [int(m[1]) for line, shards in rec.lines if (m := LINE.match(line)) and shards == 0]
    assert any(0 < n < 6 for n in partial), rec.lines
