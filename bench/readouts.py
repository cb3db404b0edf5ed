"""Label-logit scoring (the probes' readout) before and after: full-vocabulary logits at every position vs the LM
head at the last position only vs that plus the shared prompt prefix run once per batch.

    python bench/readouts.py [--concepts 4] [--batch-size 16]

Probe trials (localisation over 5 sentences and strength discrimination, injection and random-vector kinds) on the
embedded model, batches as `lab.experiments.probes.score_shard` makes them (sorted by length). Before timing, every trial's
predicted label (argmax over its label logits) must be the same on all three paths, and the largest label-logit
difference is printed. Last line: `ratio=<old / shared-prefix time>`.
"""

from __future__ import annotations

import os
import tempfile
import time

import torch

import lab  # noqa: F401
from lab.errors import ArgumentParser, one_line_errors
from lab.experiments.probes import ProbeSettings, build_request, expand_probes, span_edits
from lab.generate.runner import VectorBank
from lab.model.loading import load
from lab.protocol.words import select_concepts
from lab.steer import interventions as iv
from lab.steer.concepts import concept_vectors
from lab.steer.readouts import forward, pad_left


@torch.no_grad()
def old_forward(lm, rows, edits) -> torch.Tensor:
    ids, mask, pad = pad_left(rows, lm.tokenizer.pad_token_id)
    with iv.apply(lm.model, edits(pad)):
        return lm.model(input_ids=ids, attention_mask=mask, use_cache=False).logits[:, -1, :].float()


def main() -> None:
    ap = ArgumentParser(prog="python bench/readouts.py", description=__doc__.splitlines()[0])
    ap.add_argument("--concepts", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument(
        "--threads", type=int, default=1, help="torch threads (1: on a shared 2-core machine 2 threads ran 2-6x slower)"
    )
    ap.add_argument("--repeats", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    lm = load("smollm2-135m")
    concepts = tuple(select_concepts(f"first:{a.concepts}"))
    with tempfile.TemporaryDirectory() as tmp:
        vecs, typical = concept_vectors(lm, concepts, (12,), cache_dir=tmp)
    bank = VectorBank(vecs, typical)
    trials = expand_probes(ProbeSettings(concepts, (12,), (0.3,), kinds=("injection", "random"), repeats=2), lm.name)
    reqs = sorted((build_request(lm, bank, t) for t in trials), key=lambda r: len(r.ids))
    batches = [reqs[b : b + a.batch_size] for b in range(0, len(reqs), a.batch_size)]
    paths = {
        "full logits, padded (before)": lambda rs: old_forward(lm, [r.ids for r in rs], lambda p: span_edits(rs, p)),
        "last-position logits": lambda rs: (
            forward(lm, [r.ids for r in rs], lambda p: span_edits(rs, p), share_prefix=False).logits
        ),
        "last-position + shared prefix": lambda rs: (
            forward(lm, [r.ids for r in rs], lambda p: span_edits(rs, p)).logits
        ),
    }

    def label_logits(fn, rs) -> list[torch.Tensor]:
        logits = fn(rs)  # one forward per batch
        return [logits[i, r.label_ids] for i, r in enumerate(rs)]  # tasks have 2 or 5 labels

    labels = {name: [x for rs in batches for x in label_logits(fn, rs)] for name, fn in paths.items()}
    ref = labels["full logits, padded (before)"]
    for name, got in labels.items():
        bad = sum(int(g.argmax()) != int(r.argmax()) for g, r in zip(got, ref))
        assert bad == 0, f"{name}: {bad} predicted labels differ"
    worst = max(float((g - r).abs().max()) for got in labels.values() for g, r in zip(got, ref))
    prefix = [len(os.path.commonprefix([r.ids for r in rs])) for rs in batches]
    print(f"trials={len(reqs)} batches={len(batches)} prompt tokens {len(reqs[0].ids)}-{len(reqs[-1].ids)}")
    print(f"shared prefix per batch {min(prefix)}-{max(prefix)} tokens")
    print(f"every predicted label identical on all paths; largest label-logit difference {worst:.2e}")
    print(f"load average at start: {os.getloadavg()[0]:.2f}")
    secs = {name: float("inf") for name in paths}
    for _ in range(a.repeats):
        for name, fn in paths.items():
            t0 = time.perf_counter()
            for rs in batches:
                fn(rs)
            secs[name] = min(secs[name], time.perf_counter() - t0)
    for name, s in secs.items():
        print(f"  {name:32s} {s:6.2f} s  {len(reqs) / s:6.1f} trials/s")
    print(f"load average at end: {os.getloadavg()[0]:.2f}")
    print(f"ratio={secs['full logits, padded (before)'] / secs['last-position + shared prefix']:.2f}")


if __name__ == "__main__":
    with one_line_errors():
        main()
