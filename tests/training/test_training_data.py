"""Preference-data loaders, validation, the synthetic generator, splits, domain subsets and pair swapping."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from lab.errors import LabError
from training.preference.data import (
    load_preferences,
    select_domains,
    split_indices,
    swap_mask,
    swap_pairs,
    to_conversational,
    to_plain,
    train_eval_split,
    validate_rows,
    write_jsonl,
    write_parquet,
)
from training.preference.synthetic import DOMAINS, generate_pairs

ROWS = [
    {"prompt": "What is 2 + 2?", "chosen": "4.", "rejected": "5.", "domain": "math"},
    {"prompt": "Say hi.", "chosen": "Hi!", "rejected": "No.", "domain": "general"},
    {"prompt": "Symbol of gold?", "chosen": "Au.", "rejected": "Ag.", "domain": "science"},
]


@pytest.fixture(scope="module")
def pairs() -> list[dict]:
    return generate_pairs(5000, seed=0)


def test_generator_size_domains_and_quality(pairs: list[dict]) -> None:
    assert len(pairs) == 5000
    counts = Counter(r["domain"] for r in pairs)
    assert len(counts) >= 4 and set(counts) == set(DOMAINS)
    assert min(counts.values()) >= 5000 // len(DOMAINS)
    assert all(r["chosen"] != r["rejected"] for r in pairs)
    assert len({(r["prompt"], r["chosen"]) for r in pairs}) == 5000  # templated but varied
    assert len({r["prompt"] for r in pairs}) > 4000
    kinds = Counter(r["rejection"] for r in pairs)
    assert {"wrong", "unhelpful", "off_topic", "unsafe", "over_refusal", "instruction_violation"} <= set(kinds)
    validate_rows(pairs)  # every generated row is well-formed


def test_generator_is_deterministic_and_seeded() -> None:
    assert generate_pairs(200, seed=3) == generate_pairs(200, seed=3)
    assert generate_pairs(200, seed=3) != generate_pairs(200, seed=4)
    sub = generate_pairs(30, seed=0, domains=["math", "code"])
    assert {r["domain"] for r in sub} == {"math", "code"}
    with pytest.raises(LabError, match="unknown synthetic domain 'poetry'"):
        generate_pairs(10, domains=["poetry"])


def test_math_chosen_answers_are_correct(pairs: list[dict]) -> None:
    for r in pairs:
        if r["domain"] == "math" and "% of" in r["prompt"]:
            p, base = r["prompt"].split("What is ")[1].split("?")[0].split("% of ")
            assert r["chosen"].endswith(f"= {int(base) * int(p) // 100}.")


@pytest.mark.parametrize("kind", ["jsonl", "parquet", "disk", "rows", "dataset"])
@pytest.mark.parametrize("conversational", [False, True])
def test_loaders_round_trip(tmp_path, kind: str, conversational: bool) -> None:
    from datasets import Dataset

    rows = [to_conversational(r) for r in ROWS] if conversational else ROWS
    src: object
    if kind == "jsonl":
        src = write_jsonl(rows, tmp_path / "p.jsonl")
    elif kind == "parquet":
        src = write_parquet(rows, tmp_path / "p.parquet")
    elif kind == "disk":
        Dataset.from_list(rows).save_to_disk(str(tmp_path / "ds"))
        src = tmp_path / "ds"
    elif kind == "dataset":
        src = Dataset.from_list(rows)
    else:
        src = rows
    ds = load_preferences(src)
    assert len(ds) == 3 and ds["domain"] == ["math", "general", "science"]
    assert ds[0]["chosen"] == rows[0]["chosen"] and ds[2]["prompt"] == rows[2]["prompt"]


def test_dataset_dict_needs_a_split(tmp_path) -> None:
    from datasets import Dataset, DatasetDict

    DatasetDict({"train": Dataset.from_list(ROWS), "test": Dataset.from_list(ROWS[:1])}).save_to_disk(
        str(tmp_path / "dd")
    )
    with pytest.raises(LabError, match="choose one with split="):
        load_preferences(tmp_path / "dd")
    assert len(load_preferences(tmp_path / "dd", split="test")) == 1


def test_format_conversion_and_domain_default() -> None:
    conv = load_preferences([{k: v for k, v in r.items() if k != "domain"} for r in ROWS], format="conversational")
    assert conv[0]["prompt"] == [{"role": "user", "content": "What is 2 + 2?"}]
    assert conv[0]["chosen"] == [{"role": "assistant", "content": "4."}]
    assert set(conv["domain"]) == {"general"}
    plain = to_plain(to_conversational(ROWS[0], system="Be brief."))
    assert plain["prompt"] == "System: Be brief.\nUser: What is 2 + 2?\nAssistant:" and plain["chosen"] == " 4."


@pytest.mark.parametrize(
    "row, message",
    [
        ({"prompt": "q", "chosen": "a"}, "row 2: field 'rejected' is missing"),
        ({"prompt": "q", "chosen": "", "rejected": "b"}, "row 2: field 'chosen' is empty"),
        ({"prompt": "q", "chosen": 3, "rejected": "b"}, "row 2: field 'chosen' must be a string"),
        ({"prompt": "q", "chosen": "a", "rejected": "a"}, "row 2: fields 'chosen' and 'rejected' are identical"),
        ({"prompt": "q", "chosen": "a", "rejected": "b", "domain": ""}, "row 2: field 'domain'"),
        (
            {"prompt": "q", "chosen": [{"role": "assistant", "content": "a"}], "rejected": "b"},
            "row 2: field 'chosen' mixes conversational and plain",
        ),
    ],
)
def test_malformed_rows_name_row_and_field(row: dict, message: str) -> None:
    with pytest.raises(LabError, match=message):
        validate_rows([ROWS[0], row])


def test_malformed_conversational_rows() -> None:
    good = to_conversational(ROWS[0])
    bad_role = {**good, "chosen": [{"role": "user", "content": "x"}]}
    with pytest.raises(LabError, match="row 1: field 'chosen' must hold only assistant messages"):
        validate_rows([bad_role])
    no_content = {**good, "prompt": [{"role": "user"}]}
    with pytest.raises(LabError, match="row 1: field 'prompt' message 1 needs a role"):
        validate_rows([no_content])
    with pytest.raises(LabError, match="row 2: field 'prompt' is plain but earlier rows"):
        validate_rows([good, ROWS[1]])


def test_bad_files_are_one_line_errors(tmp_path) -> None:
    p = tmp_path / "bad.jsonl"
    p.write_text(json.dumps(ROWS[0]) + "\n{not json\n")
    with pytest.raises(LabError, match=r"bad.jsonl line 2: not valid JSON"):
        load_preferences(p)
    with pytest.raises(LabError, match="preference data not found"):
        load_preferences(tmp_path / "missing.jsonl")
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(LabError, match="unsupported preference data file"):
        load_preferences(tmp_path / "x.csv")
    (tmp_path / "x.parquet").write_text("nope")
    with pytest.raises(LabError, match="not a readable Parquet file"):
        load_preferences(tmp_path / "x.parquet")


def test_split_is_stratified_disjoint_and_deterministic(pairs: list[dict]) -> None:
    domains = [r["domain"] for r in pairs]
    tr, ev = split_indices(domains, 0.1, seed=0)
    assert len(ev) == 500 and len(tr) == 4500 and not set(tr) & set(ev)
    assert sorted(tr + ev) == list(range(5000))
    per = Counter(domains[i] for i in ev)
    assert dict(per) == {
        "code": 72,
        "general": 72,
        "instruction_following": 71,
        "math": 72,
        "multilingual": 71,
        "safety": 71,
        "science": 71,
    }  # 500 over 7 domains, stratified
    assert set(per) == set(DOMAINS)
    assert split_indices(domains, 0.1, seed=0) == (tr, ev) and split_indices(domains, 0.1, seed=1) != (tr, ev)
    with pytest.raises(LabError, match="eval_fraction"):
        split_indices(domains, 1.0)


def test_train_eval_split_and_domain_selection() -> None:
    ds = load_preferences(generate_pairs(200, seed=0))
    train, evals = train_eval_split(ds, 0.1, seed=0)
    assert len(train) + len(evals) == 200 and 15 <= len(evals) <= 25
    code = select_domains(ds, ["code", "math"])
    assert set(code["domain"]) == {"code", "math"} and len(code) == sum(d in ("code", "math") for d in ds["domain"])
    with pytest.raises(LabError, match="domain 'poetry' is not in the data"):
        select_domains(ds, ["poetry"])
    assert set(load_preferences(generate_pairs(70, 0), domains=["safety"])["domain"]) == {"safety"}


def test_swap_pairs() -> None:
    ds = load_preferences(generate_pairs(400, seed=0))
    rev = swap_pairs(ds, 1.0, seed=0)
    assert rev["chosen"] == ds["rejected"] and rev["rejected"] == ds["chosen"] and all(rev["swapped"])
    shuf = swap_pairs(ds, 0.5, seed=7)
    assert shuf["swapped"] == swap_mask(400, 0.5, 7) and 150 < sum(shuf["swapped"]) < 250
    for a, b, s in zip(ds, shuf, shuf["swapped"]):
        assert (b["chosen"], b["rejected"]) == ((a["rejected"], a["chosen"]) if s else (a["chosen"], a["rejected"]))
    assert swap_pairs(ds, 0.5, seed=7)["swapped"] == shuf["swapped"]
    assert not any(swap_pairs(ds, 0.0)["swapped"])
    with pytest.raises(LabError):
        swap_mask(3, 1.5, 0)
