"""`on_replica`: a job's model-side step run once on one model replica — in process, or on one Ray actor with only
the result coming back (the driver loads no model) — gives the same result either way."""

from __future__ import annotations

import os

import torch

from lab.config import ModelConfig
from lab.run.experiment import on_replica
from lab.run.parallel import FanOutConfig

PROMPT = "The capital of France is"


def next_tokens(lm, prompt: str, k: int) -> dict:  # a model-side step: results only (tensors, strings)
    ids = lm.tokenizer(prompt, return_tensors="pt").input_ids.to(lm.device)
    with torch.no_grad():
        top = lm.model(input_ids=ids).logits[0, -1].topk(k)
    return {"pid": os.getpid(), "ids": top.indices, "logits": top.values, "text": lm.tokenizer.decode(top.indices[0])}


def test_on_replica_gives_the_same_result_in_process_and_on_a_ray_actor(monkeypatch):
    from lab.model import loading

    local = on_replica(ModelConfig(), FanOutConfig(num_actors=0, threads=2), next_tokens, PROMPT, 5)
    loads: list[object] = []

    def no_load(*args: object, **kwargs: object) -> None:  # the driver's loader; the actor has its own
        loads.append(args)
        raise AssertionError("the driver loaded a model")

    monkeypatch.setattr(loading, "load", no_load)
    runner = FanOutConfig(num_actors=1, cpus_per_actor=1, threads=2)
    remote = on_replica(ModelConfig(), runner, next_tokens, PROMPT, 5)
    assert local["pid"] == os.getpid() != remote["pid"] and not loads  # it ran on the actor, nothing loaded here
    assert torch.equal(local["ids"], remote["ids"]) and local["text"] == remote["text"]
    torch.testing.assert_close(local["logits"], remote["logits"])
    # a loaded model is used as is, in process, whatever the runner says: no load, no actor
    given = object()
    assert on_replica(ModelConfig(name="not-loaded"), runner, lambda lm, x: (lm, x), 3, lm=given) == (given, 3)
    assert not loads
