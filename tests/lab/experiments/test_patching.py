"""Activation patching on the embedded model: patching a run with its own activations changes nothing."""

from __future__ import annotations

import pytest
import torch

from lab.experiments.patching import PatchWorker, build_batch


def _batch(lm, n_rows=1):
    g = torch.Generator().manual_seed(0)
    v = torch.randn(n_rows, 576, generator=g)
    v = v / v.norm(dim=1, keepdim=True) * 8.0
    return build_batch(lm, "b0", ["Dust", "Bread"][:n_rows], [1, 2][:n_rows], v, [1.0] * n_rows, layer=12)


def test_self_patch_is_bit_identical(embedded):
    w = PatchWorker(embedded)
    same = w.self_patch(_batch(embedded), "mlp_out.14")
    # knock-out with the steered run's own activations / knock-in with the clean run's own: the metric is unchanged
    assert same["steered_self"] == same["steered"] and same["clean_self"] == same["clean"]
    assert same["steered"] != same["clean"]  # while the injection itself does move it


@pytest.mark.slow
def test_cell_has_every_mode(embedded):
    w = PatchWorker(embedded)
    b = _batch(embedded, 2)
    cell = w.cell(b, 14, "attn_out", ["attn_out.14"])
    assert set(cell) == {
        "clean",
        "steered",
        "forced_clean",
        "forced_steered",
        "knock_out",
        "knock_in",
        "forced_knock_out",
    }
    assert all(len(v) == 2 for v in cell.values())
    # knocking out the attention output at one later layer moves the steered metric (towards clean or not)
    assert cell["knock_out"] != cell["steered"] and cell["knock_in"] != cell["clean"]


def test_effects_average_per_concept_then_interval(tmp_path, capsys):
    import pandas as pd

    from analysis.patching import effects, report

    rows = []
    for c, ko in (("A", 1.0), ("B", 2.0), ("C", 3.0)):
        for n in (1, 2):  # two trials of one concept count once
            rows.append(
                {
                    "concept": c,
                    "trial_number": n,
                    "patch_layer": 14,
                    "component": "mlp_out",
                    "clean": 0.0,
                    "steered": 1.0,
                    "knock_out": ko,
                    "knock_in": 0.5,
                    "forced_clean": -3.0,
                    "forced_steered": -2.0,
                    "forced_knock_out": -2.0,
                }
            )
    t = effects(pd.DataFrame(rows)).set_index("mode")
    assert t.loc["knock_out", "effect"] == 1.0 and t.loc["knock_out", "n_concepts"] == 3
    assert round(t.loc["knock_out", "effect_hi"] - 1.0, 4) == 2.4841  # t(2) = 4.303 × sd 1 / √3
    assert t.loc["knock_in", "effect"] == 0.5 and t.loc["forced_knock_out", "effect"] == 0.0
    table, inj, png = report(pd.DataFrame(rows), tmp_path)  # the job's report: CSV, plot, printed table
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:4] == ["mode", "comp", "layer", "effect"] and png.is_file()
    assert out[-1].startswith("injection moves Yes−No from +0.000 (clean) to +1.000 (steered)")


def test_plan_needs_no_model_and_keeps_the_stored_trial_ids():
    """The plan reads the depth from the registry (no model loaded) and gives the trial ids the job always stored:
    the demo's 40 ids are pinned (an old output folder resumes), and every shard holds whole cells of one batch."""
    import hashlib

    from lab.config import from_dict, load_yaml, to_dict
    from lab.errors import LabError
    from lab.experiments.patching import PatchingConfig, plan
    from lab.protocol.trials import trial_id
    from tests.conftest import ROOT

    demo = from_dict(PatchingConfig, load_yaml(ROOT / "configs/patching-demo.yaml"))
    p = plan(demo)
    ids = sorted(t.trial_id for t in p.trials)
    assert p.layers == [13, 17, 21, 25, 29] and len(ids) == len(set(ids)) == 40
    assert hashlib.sha256("|".join(ids).encode()).hexdigest()[:16] == "1db939a5e1693df5"
    t = p.trials[0]
    assert (t.trial_id, t.patch_layer, t.component) == ("017b0a0214304f7efd32", 13, "attn_out")
    assert t.trial_id == trial_id(
        model="smollm2-135m",
        concept="Dust",
        trial_number=1,
        layer=12,
        strength=0.2,
        strength_mode="relative",
        patch_layer=13,
        component="attn_out",
        version=1,
    )
    assert {t.shard for t in p.trials} == {(0, 0), (0, 1)}  # one batch, 10 cells: 5 for each of the 2 actors

    def shards(**runner):
        cfg = from_dict(PatchingConfig, load_yaml(ROOT / "configs/patching-demo.yaml") | {"trial_numbers": [1, 2]})
        cfg = from_dict(PatchingConfig, to_dict(cfg) | {"runner": to_dict(cfg.runner) | runner})
        out: dict = {}
        for t in plan(cfg).trials:
            out.setdefault(t.shard, set()).add((t.batch, t.patch_layer, t.component))
        cells = [c for s in out.values() for c in s]
        assert len(cells) == len(set(cells)), "a cell split over two shards"
        return {k: len(v) for k, v in out.items()}

    # 8 rows in batches of 4: 2 batches; 2 actors → a shard per batch; 4 → two per batch; shard_size caps the cells
    assert shards(batch_size=4) == {(0, 0): 10, (1, 0): 10}
    assert shards(batch_size=4, num_actors=4) == {(0, 0): 5, (0, 1): 5, (1, 0): 5, (1, 1): 5}
    assert shards(batch_size=4, shard_size=12) == {(b, k): 3 for b in (0, 1) for k in range(3)} | {(0, 3): 1, (1, 3): 1}
    with pytest.raises(LabError, match="layer 30 is out of range"):
        plan(from_dict(PatchingConfig, to_dict(demo) | {"patch_layers": [30]}))


def test_execute_keeps_trials_of_one_shard_key_together(tmp_path):
    from types import SimpleNamespace

    from lab.config import ModelConfig
    from lab.run import store
    from lab.run.experiment import execute
    from lab.run.parallel import FanOutConfig

    trials = [SimpleNamespace(trial_id=f"t{i}", key=i % 3) for i in range(8)]
    seen = []

    def work(lm, shard, ctx):
        seen.append([t.trial_id for t in shard])
        return [{"trial_id": t.trial_id, "key": t.key} for t in shard]

    run = lambda: execute(
        trials, tmp_path, ModelConfig(), FanOutConfig(num_actors=0, shard_size=2), work, lm=object(),
        progress=False, shard_key=lambda t: t.key,
    )  # fmt: skip
    assert run().new == 8 and seen == [["t0", "t3", "t6"], ["t1", "t4", "t7"], ["t2", "t5"]]  # not runs of 2
    assert len(store.shard_files(tmp_path)) == 3 and run().skipped == 8 and len(seen) == 3


def test_the_job_stores_what_the_worker_computes_and_resumes(embedded, tmp_path, capsys):
    """`jobs.patching` (in process, through execute; the driver plans without the model) stores, per row, exactly the
    metrics `PatchWorker.cell` gives on the same batch; a rerun computes nothing."""
    from jobs.patching import main
    from lab.experiments.concept_injection import model_key
    from lab.experiments.patching import PatchingConfig
    from lab.run import store
    from lab.steer.concepts import concept_vectors
    from lab.steer.injection import Strength

    out, vec = tmp_path / "out", tmp_path / "vec"
    sets = ["concepts=[Dust, Bread]", "patch_layers=[14]", "components=[mlp_out]", "runner.num_actors=0"]
    sets += ["runner.batch_size=2", "tracking.enabled=false", f"cache_dir={vec}"]
    argv = ["--config", "configs/patching-demo.yaml", "--output", str(out), "--quiet"]
    argv += [a for s in sets for a in ("--set", s)]
    assert main(argv) == 0
    assert "patching: 1 tasks (1 batches × 1 layers × 1 components), 0 already stored" in capsys.readouterr().out
    df = store.read(out / "patching").set_index("concept").loc[["Dust", "Bread"]]

    cfg = PatchingConfig()
    vecs, _ = concept_vectors(
        embedded, ["Dust", "Bread"], [12], cfg.template, cfg.baseline, str(vec), model_key(cfg.model)
    )
    cv = [vecs[(c, 12)] for c in ("Dust", "Bread")]
    raw = [Strength(0.2, "relative").raw(v.norm, v.resid_norm) for v in cv]
    b = build_batch(embedded, "ref", ["Dust", "Bread"], [1, 1], torch.stack([v.vector for v in cv]), raw, 12)
    cell = PatchWorker(embedded).cell(b, 14, "mlp_out", ["mlp_out.14"])
    assert df["strength_raw"].tolist() == raw and set(df["patch_layer"]) == {14}
    for k, v in cell.items():
        assert df[k].tolist() == v, k  # bit for bit

    assert main(argv) == 0
    assert "1 already stored" in capsys.readouterr().out and len(store.shard_files(out / "patching")) == 1
