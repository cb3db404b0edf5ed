"""The LLM judges' prompt and the strict parser of their replies.

The prompt is data (lab/data/judge_prompt.yaml: version, system, user and forced_user templates). The judge must reply
with one JSON object — `{"detected", "identified", "coherent", "reason"}`, or `{"identified", "reason"}` for a forced
identification trial — optionally wrapped in a single ```json fence; anything looser (prose around it, single quotes,
"yes" instead of true, a missing key, identified without detected) is an unparseable answer (`ParseError`), which
`lab.judges.llm.ChatJudge` records as a parse-error verdict.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from string import Template

import yaml

from lab.errors import LabError
from lab.judges.base import Answer, Conversation
from lab.judges.text import cut_invented_turn


@dataclass(frozen=True)
class JudgePrompt:
    version: str
    system: str
    user: str
    forced_user: str

    def messages(self, answer: Answer) -> Conversation:
        """System + user message for one answer (the answer cut at its first invented new turn)."""
        fields = {
            "concept": answer.concept or "(none)",
            "response": cut_invented_turn(answer.text),
            "prefill": answer.prefill,
        }
        template = self.forced_user if answer.forced else self.user
        return [
            {"role": "system", "content": self.system},
            {"role": "user", "content": Template(template).safe_substitute(fields)},
        ]


def load_prompt(path: str | Path | None = None) -> JudgePrompt:
    """The packaged judge prompt, or a YAML file with the same keys (version, system, user, forced_user)."""
    if path is None:
        where = "lab/data/judge_prompt.yaml"
        text = resources.files("lab").joinpath("data/judge_prompt.yaml").read_text()
    else:
        if not Path(path).is_file():
            raise LabError(f"judge prompt file not found: {path}")
        text, where = Path(path).read_text(), str(path)
    data = yaml.safe_load(text)
    keys = ("version", "system", "user", "forced_user")
    if not isinstance(data, dict) or any(not isinstance(data.get(k), str) or not data[k] for k in keys):
        raise LabError(f"judge prompt {where} needs non-empty string keys {', '.join(keys)}")
    return JudgePrompt(**{k: data[k] for k in keys})


class ParseError(ValueError):
    """The judge's answer is not the structured answer the prompt asked for."""


_FENCE = re.compile(r"\A```(?:json)?[ \t]*\n(.*?)\n[ \t]*```\Z", re.S)


def parse_verdict(raw: str, forced: bool) -> tuple[bool, bool, bool | None, str]:
    """(detected, identified, coherent, reason) from a judge's reply, or `ParseError`. Strict: see module docstring."""
    text = raw.strip()
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1).strip()
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise ParseError(f"not a JSON object ({e.msg})") from None
    if not isinstance(obj, dict):
        raise ParseError("not a JSON object")
    flags = ("identified",) if forced else ("detected", "identified", "coherent")
    for key in (*flags, "reason"):
        if key not in obj:
            raise ParseError(f"missing key '{key}'")
    for key in flags:
        if not isinstance(obj[key], bool):
            raise ParseError(f"'{key}' must be true or false, got {obj[key]!r}")
    if not isinstance(obj["reason"], str):
        raise ParseError("'reason' must be a string")
    if forced:
        coherent = obj.get("coherent")
        return True, obj["identified"], coherent if isinstance(coherent, bool) else None, obj["reason"]
    if obj["identified"] and not obj["detected"]:
        raise ParseError("identified is true while detected is false")
    return obj["detected"], obj["identified"], obj["coherent"], obj["reason"]
