"""Every paper preset grades with the paper's judge as the script it reproduces grades (issue 26): gpt-4.1-mini at up
to 500 tokens (src/eval_utils.py:420-426), the `paper` instrument, and the `paper_experiment` of that script; and the
presets' smaller paper settings (the Qwen layer, the baseline list), each against a value from the paper's code
(safety-research/introspection-mechanisms@5d5d9b4)."""

from __future__ import annotations

import pytest

from lab.config import load_yaml
from tests.conftest import ROOT

PAPER_PRESETS = sorted(
    p.name
    for pattern in ("*-gemma-3-27b-it.yaml", "*-olmo-3.1-32b*.yaml", "*-qwen3-235b*.yaml")
    for p in (ROOT / "configs").glob(pattern)
)
SCRIPT = {  # preset → the script of the paper's code it reproduces (lab/data/judge_prompt.yaml `experiments`)
    "concept-injection-gemma-3-27b-it.yaml": "02",
    "concept-injection-qwen3-235b-a22b.yaml": "02",
    "stages-olmo-3.1-32b.yaml": "03",
    "robustness-gemma-3-27b-it.yaml": "robustness",
    "robustness-qwen3-235b-a22b.yaml": "robustness",
    "abliteration-gemma-3-27b-it.yaml": "03d",
    "ablations-olmo-3.1-32b.yaml": "03f",
    "steering-vector-gemma-3-27b-it.yaml": "14",
}
# logit readouts, nothing to grade: patching (06_activation_patching.py) and the gates (a Yes−No logit; the code
# behind the paper's judged −29.4 % / +25.1 % gate numbers is not published, docs/protocol.md)
NO_JUDGE = {"patching-gemma-3-27b-it.yaml", "gates-gemma-3-27b-it.yaml"}


def _judge(data: dict) -> dict | None:
    return data.get("judge") or (data.get("evaluation") or {}).get("judge")


@pytest.mark.parametrize("name", PAPER_PRESETS)
def test_paper_presets_grade_with_the_papers_judge(name):
    judge = _judge(load_yaml(ROOT / "configs" / name))
    if name in NO_JUDGE:
        assert judge is None
        return
    assert judge is not None and judge["name"] == "openai", name
    opts = judge["options"]
    assert (opts["model"], opts["prompt"], opts["max_tokens"]) == ("gpt-4.1-mini", "paper", 500)
    if name in SCRIPT:
        assert opts["paper_experiment"] == SCRIPT[name]


def test_every_preset_of_this_issue_is_here():
    assert set(SCRIPT) | NO_JUDGE <= set(PAPER_PRESETS)


@pytest.mark.parametrize("name", ["concept-injection-qwen3-235b-a22b.yaml", "robustness-qwen3-235b-a22b.yaml"])
def test_qwen_layer_is_03cs_default_depth(name):
    """03c_prompt_variants.py:98 DEFAULT_LAYER_FRACTION = 0.61 and src/model_utils.py:1484 layer_idx =
    int(model_wrapper.n_layers * fraction); Qwen3-235B-A22B has 94 decoder layers."""
    sweep = load_yaml(ROOT / "configs" / name)["sweep"]
    assert sweep["layers"] == [int(94 * 0.61)] == [57]


# the presets that build concept vectors (feature regression reads the stored sweep's rates and builds its vectors
# with the sweep's defaults: it has no baseline key of its own)
VECTORS = (
    sorted(SCRIPT)
    + sorted(NO_JUDGE)
    + [
        "geometry-gemma-3-27b-it.yaml",
        "bidirectional-gemma-3-27b-it.yaml",
        "steering-vector-gemma-3-27b-it.yaml",
    ]
)


@pytest.mark.parametrize("name", VECTORS)
def test_paper_presets_subtract_the_papers_baseline_mean(name):
    """src/vector_utils.py:384-446, :541-544: the mean over the 100-entry list, "Butterflies" counted twice."""
    data = load_yaml(ROOT / "configs" / name)
    sweep = data.get("sweep") or (data.get("evaluation") or {}).get("sweep") or data
    assert sweep["baseline"] == "baseline_words_paper"
