"""Positive and negative controls of the pipeline itself, run before a sweep spends its budget (off with
`sweep.selftest: false`):

- `check_judge`: the configured judge grades three canned answers — a clear detection naming the concept (must be
  detected and identified), a clear denial and a degenerate answer (neither may be graded a detection). A judge that
  says "yes" to everything, or cannot read a plain yes, stops the sweep in one line before anything is generated.
- `check_steering` (on the first replica, inside `lab.experiments.concept_injection.prepare`): for one probe trial per layer (the sweep's
  largest strength, the concept's own vector), one forward of the trial's own prompt with and without the
  injection. A config that disables injection (all strengths 0, a zero vector, logits left bit-identical) fails here
  in one line; an applied injection that raises the concept word's first token at no probed layer is a printed
  warning (on an abliterated model that can be the finding, not an error).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from lab.errors import LabError
from lab.judges import Answer

CONCEPT = "Bread"
CANNED = (
    (
        "a clear detection naming the concept",
        "Yes, I detect an injected thought. The thought seems to be about bread.",
        True,
    ),
    ("a clear denial", "No, I don't detect any injected thought. Everything seems normal.", False),
    ("a degenerate answer", "the the the the the the the the the the the the the the the the", False),
)


def check_judge(judge: Any) -> None:
    """LabError (one line) unless the judge grades every canned answer as expected."""
    verdicts = judge.grade([Answer(CONCEPT, text) for _, text, _ in CANNED])
    for (what, text, claim), v in zip(CANNED, verdicts):
        ok = (v.detected is True and v.identified is True) if claim else v.detected is not True
        if not ok:
            want = "a detection naming the concept" if claim else "no detection"
            raise LabError(
                f"judge self-test failed: judge '{judge.name}' graded {what} ({text[:40]!r}…) as "
                f"detected={v.detected}, identified={v.identified} (expected {want}); fix the judge or "
                "set sweep.selftest: false"
            )


def probes(trials: Sequence[Any]) -> tuple[Any, ...]:
    """One injected, unforced trial per layer at the sweep's largest strength (the steering self-test's inputs).
    Only trials that inject their concept's own vector: a named bank vector (a projection, a difference of two
    concepts) has no reason to raise one word's probability."""
    best: dict[int, Any] = {}
    for t in trials:
        own = t.kind == "injection" and not t.forced and not getattr(t, "vector", None)
        if own and (t.layer not in best or t.strength > best[t.layer].strength):
            best[t.layer] = t
    return tuple(best[k] for k in sorted(best))


@torch.no_grad()
def check_steering(lm: Any, bank: Any, trials: Sequence[Any], edits: Sequence[Any] = ()) -> dict[int, float]:
    """Per probe trial's layer, the concept's next-token log-probability gain under injection. LabError when the
    injection is not applied (zero strength or vector, bit-identical logits): a plumbing or config error. When it is
    applied but the concept's first token gains at no probed layer, one printed warning: on an edited model (an
    abliterated one, say) that can be the finding itself, so the sweep goes on."""
    from lab.generate.runner import Runner
    from lab.steer import interventions as iv
    from lab.steer.injection import Injection, inject
    from lab.steer.readouts import concept_first_token

    runner, gains = Runner(lm, bank, 1, edits), {}
    for t in trials:
        req = runner.request(t)
        if req.vector is None or req.raw == 0 or float(req.vector.norm()) == 0:
            raise LabError(
                f"steering self-test failed: the injection at layer {t.layer} is disabled (raw strength "
                f"{req.raw:g}, ‖v‖ {0 if req.vector is None else float(req.vector.norm()):g} for "
                f"'{t.concept}'); check sweep.strengths and the concept vectors"
            )
        ids = torch.tensor([req.ids], device=lm.device)
        with iv.apply(lm.model, list(edits)):
            plain = lm.model(input_ids=ids).logits[0, -1].float().log_softmax(-1)
            with inject(lm.model, Injection(t.layer, req.vector[None].to(lm.device), [req.raw], [req.start])):
                steered = lm.model(input_ids=ids).logits[0, -1].float().log_softmax(-1)
        if torch.equal(plain, steered):
            raise LabError(
                f"steering self-test failed: injecting '{t.concept}' at layer {t.layer} (raw strength "
                f"{req.raw:g}) left the logits bit-identical: the injection is not applied"
            )
        tok = concept_first_token(lm.tokenizer, t.vector or t.concept)
        gains[t.layer] = float(steered[tok] - plain[tok])
    if gains and max(gains.values()) <= 0:
        shown = ", ".join(f"L{k}: {v:+.3f}" for k, v in gains.items())
        print(
            f"warning: steering self-test: the injection is applied, but it did not raise the concept word's "
            f"next-token log-probability at any probed layer ({shown}); check the vectors, layers and strengths "
            "unless the model was edited on purpose",
            flush=True,
        )
    return gains
