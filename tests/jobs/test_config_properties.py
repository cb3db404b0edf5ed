"""Property test over every job's config: any single-key corruption of a shipped config either builds (and then
round-trips through YAML) or fails with one `LabError` line — never a traceback from deeper down."""

from __future__ import annotations

import importlib

import pytest
import yaml
from hypothesis import HealthCheck, given, settings, strategies as st

from lab.config import for_model, from_dict, load_yaml, to_dict
from lab.errors import LabError
from tests.conftest import ROOT
from tests.jobs.test_configs import JOBS

VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=True),
    st.text(max_size=12),
    st.lists(st.integers(-5, 40), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)


def _paths(data, prefix=()):
    for k, v in data.items():
        yield (*prefix, k)
        if isinstance(v, dict):
            yield from _paths(v, (*prefix, k))


def _set(data, path, value):
    node = data
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value


@pytest.mark.parametrize("name", sorted(JOBS))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pick=st.integers(0, 10**6), value=VALUES, extra=st.booleans())
def test_corrupted_configs_fail_in_one_line_or_round_trip(name, pick, value, extra):
    module, cls_name = JOBS[name]
    cls = getattr(importlib.import_module(f"jobs.{module}"), cls_name)
    data = for_model(load_yaml(ROOT / "configs" / name))  # as jobs.cli loads it (its per_model: block applied)
    paths = list(_paths(data))
    path = paths[pick % len(paths)]
    if extra:  # an unknown key next to a real one
        path = (*path[:-1], path[-1] + "_typo")
    _set(data, path, value)
    try:
        cfg = from_dict(cls, data)
    except LabError as e:
        msg = str(e)
        assert msg and "\n" not in msg
        if extra:
            assert path[-1] in msg and "known" in msg  # names the key and the allowed ones
        return
    again = from_dict(cls, yaml.safe_load(yaml.safe_dump(to_dict(cfg), sort_keys=False)))
    assert to_dict(again) == to_dict(cfg)


def test_nan_is_no_setting():
    """NaN parses from YAML (`.nan`) but means nothing as a setting and would not compare equal to itself: one line."""
    from jobs.bidirectional import BidirectionalConfig

    data = load_yaml(ROOT / "configs" / "bidirectional-demo.yaml")
    data["threshold"] = float("nan")
    with pytest.raises(LabError, match="'threshold' must be a number, got nan"):
        from_dict(BidirectionalConfig, data)
