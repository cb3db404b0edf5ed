from __future__ import annotations

import pandas as pd
import pytest
from hypothesis import given, settings, strategies as st

from lab.errors import LabError
from lab.protocol.trials import IdTemplate, SweepConfig, expand, trial_id
from lab.reporting import metrics
from lab.run import store


def test_expand_pairs_every_injection_with_controls_and_ids_are_stable():
    sw = SweepConfig(
        concepts="first:2", trials_per_concept=3, controls=("random", "norm_matched"), forced_identification=True
    )
    a = expand(sw, "m", (10, 12), (0.1, 0.2), "relative")
    b = expand(sw, "m", (10, 12), (0.1, 0.2), "relative")
    assert [t.trial_id for t in a] == [t.trial_id for t in b]
    inj = [t for t in a if t.kind == "injection" and not t.forced]
    ctl = [t for t in a if t.kind == "control"]
    assert len(inj) == len(ctl) == 2 * 2 * 2 * 3
    assert {(t.concept, t.layer, t.strength, t.trial_number) for t in inj} == {
        (t.concept, t.layer, t.strength, t.trial_number) for t in ctl
    }
    assert sum(t.forced for t in a) == len(inj) and len(a) == len(inj) * 5
    c = expand(SweepConfig(concepts="first:2", trials_per_concept=3, temperature=1.0), "m", (10,), (0.1,), "raw")
    assert not {t.trial_id for t in c} & {t.trial_id for t in a}


def test_trial_ids_stored_on_disk_do_not_change():
    t = expand(SweepConfig(concepts="first:1", trials_per_concept=1), "smollm2-135m", (12,), (0.2,), "relative")[0]
    assert (t.concept, t.kind, t.trial_id) == ("Dust", "injection", "43681ee8a3256e20bb8a")
    sw = SweepConfig(
        concepts="first:3", trials_per_concept=2, samples=2, controls=("random",), forced_identification=True
    )
    for t in expand(sw, "m", (10, 12), (0.1, 2.0), "raw"):  # the id template equals hashing every field
        assert t.trial_id == trial_id(**{k: v for k, v in t.to_dict().items() if k not in ("trial_id", "vector")})
    scalar = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=6))
    fields = st.dictionaries(
        st.text(min_size=1, max_size=6), st.one_of(scalar, st.lists(scalar, max_size=3)), max_size=8
    )

    @settings(max_examples=300, deadline=None)
    @given(fields, fields)
    def same(fixed, values):
        values = {k: v for k, v in values.items() if k not in fixed}
        assert IdTemplate(fixed, list(values))(**values) == trial_id(**fixed, **values)

    same()
    assert IdTemplate({}, ["a", "b"])(a=True, b=0.0) != IdTemplate({}, ["a", "b"])(a=1, b=-0.0)


@pytest.mark.parametrize(
    "k,n,lo,hi", [(0, 10, 0.0, 0.2775), (5, 10, 0.2366, 0.7634), (10, 10, 0.7225, 1.0), (1, 100, 0.0018, 0.0545)]
)
def test_wilson_matches_reference_values(k, n, lo, hi):
    p, a, b = metrics.wilson(k, n)
    assert p == k / n and round(a, 4) == lo and round(b, 4) == hi


def _rows():
    rows = []
    for i, (kind, det, ide, forced) in enumerate(
        [
            ("injection", True, True, False),
            ("injection", True, False, False),
            ("injection", False, False, False),
            ("injection", None, None, False),
            ("control", False, None, False),
            ("control", True, None, False),
            ("random", True, False, False),
            ("injection", True, True, True),
            ("injection", True, False, True),
        ]
    ):
        rows.append(
            dict(
                trial_id=f"t{i}",
                kind=kind,
                detected=det,
                identified=ide,
                coherent=True,
                forced=forced,
                layer=10,
                strength=0.1,
                concept="Dust",
            )
        )
    return rows


def test_rates_by_hand():
    s = metrics.summarize(pd.DataFrame(_rows()))
    assert (s["tpr"], s["n_tpr"]) == (2 / 3, 3)  # the unparsed verdict is out of the denominator
    assert s["fpr"] == 0.5 and s["introspection"] == 1 / 3 and s["forced_id"] == 0.5
    assert s["random_rate"] == 1.0 and s["n_unparsed"] == 1
    assert s["balanced_accuracy"] == pytest.approx((2 / 3 + 0.5) / 2)
    assert (s["tpr_lo"], s["tpr_hi"]) == pytest.approx(metrics.wilson(2, 3)[1:])


def test_store_is_resumable_and_atomic(tmp_path):
    rows = _rows()
    store.write_shard(tmp_path, rows[:4])
    store.write_shard(tmp_path, rows[4:])
    (tmp_path / ".shard-dead.123.tmp").write_text("half")
    assert store.finished_ids(tmp_path) == {r["trial_id"] for r in rows}
    assert store.pending(["t0", "t99"], tmp_path) == ["t99"]
    assert store.clean_partial(tmp_path) == 1
    store.write_shard(tmp_path, rows[:4])  # idempotent: same ids → same shard file
    assert len(store.shard_files(tmp_path)) == 2
    df = store.read(tmp_path)
    assert len(df) == len(rows) and df["trial_id"].is_unique
    with pytest.raises(LabError, match="no results found"):
        store.read(tmp_path / "nothing")


def _generation(kind: str, concept: str, n: int = 1, sample: int = 0, temperature: float = 0.0, **kw) -> dict:
    """A stored row as the runner writes it (the prompt depends on the trial number only, not on the concept)."""
    raw = 0.0 if kind == "control" else 4.0
    return (
        dict(
            trial_id=f"{kind}-{concept}-{n}-{sample}-{temperature}",
            model="m",
            kind=kind,
            concept=concept,
            layer=10,
            strength=4.0,
            strength_raw=raw,
            seed=0,
            sample=sample,
            forced=False,
            trial_number=n,
            prompt=f"<prompt Trial {n}>",
            max_new_tokens=48,
            temperature=temperature,
            detected=False,
            identified=False,
            coherent=True,
            parse_error=False,
        )
        | kw
    )


def test_identical_greedy_requests_count_once():
    greedy = pd.DataFrame(
        [
            _generation("control", "Dust"),
            _generation("control", "Trumpets"),  # one generation
            _generation("injection", "Dust"),
            _generation("injection", "Trumpets"),  # two vectors
            _generation("injection", "Dust", sample=1),  # greedy: the same generation as sample 0
            _generation("random", "Dust"),
            _generation("random", "Dust", sample=1),
        ]
    )  # two vectors
    s = metrics.summarize(greedy)
    assert (s["n_fpr"], s["trials_fpr"]) == (1, 2) and (s["fpr_lo"], s["fpr_hi"]) == metrics.wilson(0, 1)[1:]
    assert (s["n_tpr"], s["trials_tpr"]) == (2, 3) and (s["n_random_rate"], s["trials_random_rate"]) == (2, 2)
    assert len(metrics.distinct(greedy)) == 5
    assert metrics.rates(greedy, by=()).iloc[0]["fpr_hi"] == metrics.wilson(0, 1)[2]
    # another trial number is another prompt; at temperature 1.0 every row is its own draw
    more = pd.concat([greedy, pd.DataFrame([_generation("control", "Dust", n=2)])], ignore_index=True)
    assert metrics.summarize(more)["n_fpr"] == 2
    sampled = pd.DataFrame([_generation("control", c, temperature=1.0) for c in ("Dust", "Trumpets", "Bread")])
    assert (metrics.summarize(sampled)["n_fpr"], metrics.summarize(sampled)["trials_fpr"]) == (3, 3)
    # rows without the generation columns cannot be told apart: each counts
    assert metrics.summarize(pd.DataFrame(_rows()))["trials_tpr"] == 3
