"""The paper's preference-data recipe on a local copy of a preference data set in the Hugging Face layout.

`load_paper_preferences(path, eos_token)` reads a `save_to_disk` directory or a directory of Parquet / JSONL files
(`training.preference.data` reads both) with `prompt` / `chosen` / `rejected` columns (a missing `prompt`: the first
message of `chosen`, as the paper reads allenai/dolci-instruct-dpo) and a domain column (`source` by default, else
`domain`), and applies the paper's rules (safety-research/introspection-mechanisms, experiments/03f_dpo_mechanism_
ablation.py, cited as 03f:line): keep only the domains asked for (include / exclude), cut the prompt to 500 characters
and each answer to 1500 (`long_rows="truncate"`, what 03f:517-525 does; the lab's default `"drop"` drops those rows
instead and counts them), format each answer as " " + answer + EOS (the space only where the answer has none,
03f:527-528; EOS at tokenisation, 03f:1433), and split 90/10 at random with a seed.

Domains: `domain_map="paper"` names each row's domain as 03f does (`paper_domain`: the source data set in the
`prompt_id` looked up in `SOURCE_DOMAIN_MAP`, 8 domains incl. `nlp_task`, else the keyword fallback,
03f:247-314); `"column"` (the lab's default) reads `domain_column`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from lab.errors import LabError
from training.preference.data import read_source, split_indices, validate_rows

# 03f:247-275, verbatim: the dolci-instruct-dpo source data set (the part of `prompt_id` before "-request-") → domain
SOURCE_DOMAIN_MAP = {
    "correct-python-sft-187k": "code",
    "evol_codealpaca_heval_decontaminated": "code",
    "personahub_code_v2_34999": "code",
    "tulu-3-sft-personas-math": "math",
    "tulu-3-sft-personas-math-grade": "math",
    "tulu-3-sft-personas-algebra": "math",
    "tulu_v3.9_open_math_2_gsm8k_50k": "math",
    "tulu_v3.9_wildjailbreak_decontaminated_50k": "safety",
    "tulu_v3.9_synthetic_finalresp_wildguardmixtrain_decontaminated_50k": "safety",
    "tulu-3-sft-coconot-regenerated": "safety",
    "tulu_v3.9_sciriff_10k": "science",
    "tulu_v3.9_aya_100k": "multilingual",
    "Wildchat-1m-gpt-4.1-regeneration-not-english": "multilingual",
    "IF_sft_data_verified_permissive": "instruction_following",
    "tulu-3-sft-personas-instruction-following-o3": "instruction_following",
    "valpy_if_qwq_reasoning_verified_no_reasoning": "instruction_following",
    "OpenThoughts3-full-filtered-science-no-cot": "science",
    "flan_v2_converted": "nlp_task",
    "tulu_v3.9_table_gpt_5k": "nlp_task",
    "ultrafeedback_cleaned_olmo2_7b": "general",
    "filtered_wc_sample_500k": "general",
    "Wildchat-1M-gpt-4.1-regenerated-english": "general",
    "DaringAnteater-prefs_olmo2_7b": "general",
    "oasst1_converted": "general",
}
# 03f:290-306, in the paper's order (the first list that matches wins)
KEYWORDS = (
    ("safety", ("harmful", "illegal", "weapon", "hack", "exploit", "violence", "fraud", "jailbreak", "bypass safety")),
    (
        "nlp_task",
        ("in this task", "you will be given", "given the following", "classify", "sentiment", "given a passage"),
    ),
    ("math", ("solve", "calculate", "equation", "math", "integral", "algebra", "geometry", "probability")),
    ("code", ("python", "javascript", "function", "program", "code", "```", "sql", "html", "algorithm")),
    (
        "science",
        (
            "biology",
            "chemistry",
            "physics",
            "molecule",
            "protein",
            "genes",
            "genetics",
            "genomic",
            "experiment",
            "hypothesis",
            "scientific",
        ),
    ),
)
PAPER_DOMAINS = tuple(sorted(set(SOURCE_DOMAIN_MAP.values())))  # the 8 domains


def keyword_domain(prompt: str) -> str:
    """03f:287-306: the first keyword list that occurs in the lower-cased prompt, else 'general'."""
    p = prompt.lower()
    return next((dom for dom, kws in KEYWORDS if any(kw in p for kw in kws)), "general")


def paper_domain(prompt_id: str, prompt: str) -> str:
    """03f:281-314: the source data set named in `prompt_id` ("<source>-request-<n>") → its domain, else keywords."""
    parts = str(prompt_id or "").rsplit("-request-", 1)
    source = parts[0] if len(parts) == 2 else "unknown"
    return SOURCE_DOMAIN_MAP.get(source) or keyword_domain(prompt)


@dataclass(frozen=True)
class PaperData:
    """Train / eval `datasets.Dataset`s (plain `prompt`, `chosen`, `rejected`, `domain`) and what was dropped."""

    train: Any
    eval: Any
    n_read: int
    dropped_domain: int
    dropped_long: int
    dropped_invalid: int
    domains: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        return (
            f"{self.n_read} rows read; dropped {self.dropped_domain} by domain, {self.dropped_long} over the "
            f"length limits, {self.dropped_invalid} empty or identical; {len(self.train)} train / "
            f"{len(self.eval)} eval; domains {dict(sorted(self.domains.items()))}"
        )


def _text(value: Any) -> str:
    """A string as is; a list of chat messages → the last message's content (the answer / the user turn)."""
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)) and value and isinstance(value[-1], Mapping):
        return str(value[-1].get("content") or "")
    return "" if value is None else str(value)


def _first(value: Any) -> str:
    """The first message's content (03f:497 reads the user prompt as `chosen[0]["content"]`)."""
    if isinstance(value, (list, tuple)) and value and isinstance(value[0], Mapping):
        return str(value[0].get("content") or "")
    return ""


def _spaced(answer: str) -> str:
    """03f:527-528: a leading space, unless the answer already starts with one."""
    return answer if answer.startswith(" ") else " " + answer


def load_paper_preferences(
    source: Any,
    eos_token: str,
    *,
    split: str | None = None,
    domain_column: str = "source",
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    max_prompt_chars: int = 500,
    max_answer_chars: int = 1500,
    eval_fraction: float = 0.1,
    seed: int = 0,
    long_rows: Literal["drop", "truncate"] = "drop",
    domain_map: Literal["column", "paper"] = "column",
) -> PaperData:
    """The paper's filtered, formatted, split preference rows (see the module docstring)."""
    from datasets import Dataset

    if not eos_token:
        raise LabError("load_paper_preferences needs the tokenizer's eos_token")
    if long_rows not in ("drop", "truncate") or domain_map not in ("column", "paper"):
        raise LabError(
            f"long_rows must be drop|truncate and domain_map column|paper, got {long_rows!r}, {domain_map!r}"
        )
    name, rows = read_source(source, split)
    rows = [r if r.get("prompt") is not None else {**r, "prompt": _first(r.get("chosen"))} for r in rows]
    if domain_map == "paper":
        doms = [paper_domain(str(r.get("prompt_id") or ""), _text(r.get("prompt"))) for r in rows]
    else:
        doms = [str(r.get(domain_column) or r.get("domain") or "general") for r in rows]
    have = set(doms)
    unknown = [d for d in list(include) + list(exclude) if d not in have]
    if unknown:
        raise LabError(f"domain '{unknown[0]}' is not in {name} (domains: {', '.join(sorted(have))})")
    keep, n_dom, n_long, n_bad = [], 0, 0, 0
    for row, dom in zip(rows, doms):
        if (include and dom not in include) or dom in exclude:
            n_dom += 1
            continue
        prompt, chosen, rejected = (_text(row.get(f)) for f in ("prompt", "chosen", "rejected"))
        if long_rows == "truncate":  # 03f:518-525
            prompt, chosen, rejected = prompt[:max_prompt_chars], chosen[:max_answer_chars], rejected[:max_answer_chars]
        elif len(prompt) > max_prompt_chars or max(len(chosen), len(rejected)) > max_answer_chars:
            n_long += 1
            continue
        if not (prompt.strip() and chosen.strip() and rejected.strip()) or chosen == rejected:
            n_bad += 1
            continue
        keep.append(
            {
                "prompt": prompt,
                "chosen": _spaced(chosen) + eos_token,
                "rejected": _spaced(rejected) + eos_token,
                "domain": dom,
            }
        )
    if not keep:
        raise LabError(f"{name}: no preference rows left after the domain and length filters")
    keep = validate_rows(keep, source=name)
    tr, ev = split_indices(["all"] * len(keep), eval_fraction, seed)  # one random split, not stratified
    return PaperData(
        Dataset.from_list([keep[i] for i in tr]),
        Dataset.from_list([keep[i] for i in ev]),
        len(rows),
        n_dom,
        n_long,
        n_bad,
        dict(Counter(r["domain"] for r in keep)),
    )
