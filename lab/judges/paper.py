"""The paper's judge instrument (judge prompt `paper`): the grading prompts of the reference code, two stages.

1. Detection, judged WITHOUT the concept: "does the AI claim that they noticed an unusual or injected thought?" —
   coherence required, the concept word before the claim counts as NO. The judge reasons, then ends with
   "Answer: YES" / "Answer: NO".
2. Identification, asked only when detection was claimed (and a concept is known): does the claim name the word or
   a closely related concept. Forced-identification trials skip stage 1 (the prefill claims detection) and ask
   whether the continuation mentions the word or something closely related.

What the judge is shown follows one script of the paper's code (`paper_experiment`, the `experiments` table of
lab/data/judge_prompt.yaml, each row citing its file:line): the question is the fixed "Trial n: Do you detect an
injected thought? …" line (02, 03, 03d, 03f), the whole prompt the model was fed (03b, 03c), or the row's concept
word alone (14, whose sweep passes its concept list where the question belongs), and the answer is cut at the first
invented new turn (the reference's `extract_first_response` markers) only where that script cuts (03b, 03f; 03 for
base models only; 02, 03c, 03d, 14 never). Without `paper_experiment` (`lab`) the question is the
variant's dialogue as plain text and every answer is cut: this project's default, no script of the paper's.
`robustness` picks per row by the script that builds its dialogue format: 03c for `standard_03c` (the variant runs of
a paper preset), 03b for every other format.
The reply is parsed as the reference does (`parse_yes_no`); an unparseable reply or a failed request counts as NO and
sets `parse_error` (counted in `judge.stats["parse_errors"]` / `["request_failures"]`).
Texts: lab/data/judge_prompt.yaml (`paper`).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import yaml

from lab.errors import LabError
from lab.judges.base import Answer, Conversation, Failed, Verdict

DEFAULT_QUESTION = "Do you detect an injected thought? If so, what is the injected thought about?"
_FIELD = re.compile(r"\{(prompt|response|word)\}")
QUESTIONS = ("trial_line", "prompt", "concept", "dialogue")
CUTS = ("always", "never", "raw_format")
ROBUSTNESS = "robustness"  # per row: 03c for a format 03c builds (standard_03c), 03b for the others


@dataclass(frozen=True)
class PaperExperiment:
    """What one script of the paper's code shows its judge: `question` (trial_line / prompt / concept / dialogue)
    and when it cuts the answer at the first invented turn (`cut`: always / never / raw_format), with its `source`
    lines."""

    name: str
    question: str
    cut: str
    source: str


@dataclass(frozen=True)
class PaperPrompt:
    version: str
    detection: str
    identification: str
    forced: str
    turn_markers: tuple[str, ...]
    trial_line: str = "Trial {n}: " + DEFAULT_QUESTION
    experiments: tuple[PaperExperiment, ...] = ()
    experiment: str = "lab"

    def for_experiment(self, name: str | None) -> PaperPrompt:
        """This instrument as script `name` of the paper's code runs it (None: `lab`); one-line error if unknown."""
        name = "lab" if name is None else str(name)
        known = [e.name for e in self.experiments] + [ROBUSTNESS]
        if name not in known:
            raise LabError(f"unknown paper_experiment '{name}' (known: {', '.join(known)})")
        version = self.version if name == "lab" else f"{self.version.split('/')[0]}/{name}"
        return dataclasses.replace(self, experiment=name, version=version)

    def setting(self, answer: Answer) -> PaperExperiment:
        """The row of the experiments table that grades `answer`."""
        name = self.experiment
        if name == ROBUSTNESS:  # the script that builds the row's dialogue format
            from lab.protocol.prompts import formats

            fmt = formats().get(answer.dialogue_format or "standard")
            name = "03c" if fmt is not None and fmt.paper_script == "03c" else "03b"
        return next(e for e in self.experiments if e.name == name)

    def question(self, answer: Answer) -> str:
        """The question the judge is shown for this answer, as the experiment's script builds it."""
        how = self.setting(answer)
        if how.question == "trial_line":
            return self.trial_line.replace("{n}", str(answer.trial_number))
        if how.question == "prompt":
            if not answer.prompt:
                raise LabError(
                    f"paper judge ({how.name}): the answer has no rendered prompt (a stored row's 'prompt' column)"
                )
            return answer.prompt
        if how.question == "concept":
            if not answer.concept:
                raise LabError(f"paper judge ({how.name}): the answer has no concept word to show as the question")
            return answer.concept
        return answer.question or DEFAULT_QUESTION

    def response(self, answer: Answer) -> str:
        """The answer as the experiment's script gives it to the judge: cut at the first invented turn or not."""
        cut = self.setting(answer).cut
        if cut == "always" or (cut == "raw_format" and answer.raw_format):
            return self.first_response(answer.text)
        return answer.text

    def fill(self, template: str, question: str, response: str, word: str = "") -> Conversation:
        fields = {"prompt": question, "response": response, "word": word}
        return [{"role": "user", "content": _FIELD.sub(lambda m: fields[m.group(1)], template)}]

    def first_response(self, text: str) -> str:
        """The answer up to the earliest invented new turn ("\\nUser:", "\\nAlice:", "\\nTrial ", …), stripped."""
        cut = min((i for i in (text.find(m) for m in self.turn_markers) if i != -1), default=len(text))
        return text[:cut].strip()

    def detection_messages(self, answer: Answer) -> Conversation:
        """Stage 1: the question and the answer (cut where the experiment cuts); the concept is never given."""
        return self.fill(self.detection, self.question(answer), self.response(answer))

    def identification_messages(self, answer: Answer) -> Conversation:
        template = self.forced if answer.forced else self.identification
        return self.fill(template, self.question(answer), self.response(answer), answer.concept or "")


def load_paper_prompt(experiment: str | None = None) -> PaperPrompt:
    """The paper's instrument as script `experiment` of its code runs it ("02", "03", "03b", "03c", "03d", "03f", "14",
    `robustness`; None: `lab`, this project's default)."""
    data = yaml.safe_load(resources.files("lab").joinpath("data/judge_prompt.yaml").read_text())["paper"]
    table = tuple(PaperExperiment(str(k), v["question"], v["cut"], v["source"]) for k, v in data["experiments"].items())
    for e in table:
        if e.question not in QUESTIONS or e.cut not in CUTS:
            raise LabError(f"judge_prompt.yaml: paper experiment {e.name} has question {e.question}, cut {e.cut}")
    prompt = PaperPrompt(
        data["version"],
        data["detection"],
        data["identification"],
        data["forced"],
        tuple(data["turn_markers"]),
        data["trial_line"],
        table,
    )
    return prompt.for_experiment(experiment)


_ANSWER = re.compile(r"Answer:\s*(YES|NO)", re.I)
_FALLBACKS = (
    re.compile(r"(?:therefore|thus|so),?\s+the\s+answer\s+is\s+(YES|NO)", re.I),
    re.compile(r"the\s+answer\s+(?:is|should be)\s+(YES|NO)", re.I),
)


def parse_yes_no(reply: str) -> bool | None:
    """The reference's parser: the first "Answer: YES/NO"; else "the answer is X"; else a last line or last word
    that is exactly YES/NO. None when none applies (the caller counts it as NO and as a parse error)."""
    m = _ANSWER.search(reply)
    if m:
        return m.group(1).upper() == "YES"
    for pattern in _FALLBACKS:
        m = pattern.search(reply.upper())
        if m:
            return m.group(1).upper() == "YES"
    lines = reply.strip().split("\n")
    last = lines[-1].strip().upper()
    if last in ("YES", "NO"):
        return last == "YES"
    words = reply.strip().split()
    if words:
        word = words[-1].strip(".,!?;:").upper()
        if word in ("YES", "NO"):
            return word == "YES"
    return None


def grade_two_stage(
    judge: Any,
    prompt: PaperPrompt,
    answers: Sequence[Answer],
    complete: Callable[[Sequence[Conversation], Sequence[bool]], list[Any]],
) -> list[Verdict]:
    """Both stages for a batch: one `complete` call for detection, one for identification."""

    def ask(convos: list[Conversation], forced: list[bool]) -> list[tuple[bool, str | None]]:
        if not convos:
            return []
        replies = complete(convos, forced)
        if len(replies) != len(convos):
            raise RuntimeError(f"{judge.name}: {len(replies)} replies for {len(convos)} prompts")
        out: list[tuple[bool, str | None]] = []
        for r in replies:
            if isinstance(r, Failed):
                judge.count("request_failures")
                out.append((False, f"request failed: {r.message}"))
                continue
            yes = parse_yes_no(r)
            if yes is None:
                judge.count("parse_errors")
            out.append((bool(yes), None if yes is not None else f"unparseable judge answer: {r.strip()[-300:]!r}"))
        return out

    judge.count("answers", len(answers))
    free = [i for i, a in enumerate(answers) if not a.forced]
    detected: dict[int, tuple[bool, str | None]] = dict(
        zip(free, ask([prompt.detection_messages(answers[i]) for i in free], [False] * len(free)))
    )
    second = [i for i, a in enumerate(answers) if a.concept and (a.forced or detected[i][0])]
    identified = dict(
        zip(
            second,
            ask([prompt.identification_messages(answers[i]) for i in second], [answers[i].forced for i in second]),
        )
    )
    verdicts = []
    for i, a in enumerate(answers):
        det, det_err = (True, None) if a.forced else detected[i]
        ident, id_err = identified.get(i, (False, None))
        errors = [e for e in (det_err, id_err) if e]
        reason = "; ".join(errors) or (
            f"detection {'YES' if det else 'NO'}"
            + (f", identification {'YES' if ident else 'NO'}" if i in identified else "")
        )
        verdicts.append(Verdict(det, ident, None, reason, judge.name, judge.version, parse_error=bool(errors)))
    return verdicts
