"""The truncation policy: head-tail keeps a long prompt's question, left its tail; both stay within the budget, marker
included; old bundles mean left."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from tokenizers import Tokenizer

from models.bundle import META_FILE, BundleError, read_bundle
from models.formatting import FormatSpec, Formatter
from models.messages import FormatError
from models.runtime import BundleScorer
from models.truncation import cut_pair

QUESTION = "Question: which river flows through the city of Kraków?"
PASSAGES = " ".join(f"Passage {i} says the weather was mild on day {i}." for i in range(40))
ANSWER = "The Vistula."


def formatter(minilm_path: str, max_length: int, truncation: str) -> Formatter:
    spec = FormatSpec("pair", max_length, truncation=truncation)  # type: ignore[arg-type]
    return Formatter(Tokenizer.from_file(f"{minilm_path}/tokenizer.json"), spec)


def contains(ids: list[int], part: list[int]) -> bool:
    return any(ids[i : i + len(part)] == part for i in range(len(ids) - len(part) + 1))


def test_head_tail_keeps_the_question_that_left_truncation_drops(minilm_path: str) -> None:
    left, head_tail = formatter(minilm_path, 96, "left"), formatter(minilm_path, 96, "head-tail")
    question = left.tokenizer.encode(QUESTION, add_special_tokens=False).ids
    answer = left.tokenizer.encode(ANSWER, add_special_tokens=False).ids
    marker = head_tail._marker
    prompt = f"{QUESTION}\n\n{PASSAGES}"
    cut_left, cut_ht = left.encode(prompt, ANSWER), head_tail.encode(prompt, ANSWER)
    assert cut_left.truncated and cut_ht.truncated and len(cut_left) == len(cut_ht) == 96
    assert not contains(cut_left.ids, question) and contains(cut_ht.ids, question)
    assert contains(cut_ht.ids, marker) and not contains(cut_left.ids, marker)
    # Both keep the prompt's last tokens (the latest context) and the whole completion.
    last = [*left.tokenizer.encode(PASSAGES, add_special_tokens=False).ids[-5:], left._layout.mid[0]]  # then [SEP]
    assert contains(cut_left.ids, last) and contains(cut_ht.ids, last)
    assert contains(cut_left.ids, answer) and contains(cut_ht.ids, answer)
    assert "[ … ]" in head_tail.tokenizer.decode(cut_ht.ids)  # visible to the model and to a person reading ids


@pytest.mark.parametrize("truncation", ["left", "head-tail"])
def test_every_pair_fits_the_budget_marker_included(minilm_path: str, truncation: str) -> None:
    for max_length in (8, 9, 10, 12, 16, 33, 64):
        fmt = formatter(minilm_path, max_length, truncation)
        for n_prompt in (0, 1, 3, 8, 30, 120):
            for n_answer in (0, 1, 4, 20, 90):
                prompt = " ".join(f"p{i}" for i in range(n_prompt))
                answer = " ".join(f"a{i}" for i in range(n_answer))
                enc = fmt.encode(prompt, answer)
                whole = fmt.tokenizer.encode(prompt, answer)
                assert len(enc) <= max_length and enc.truncated == (len(whole.ids) > max_length)
                if not enc.truncated:  # short pairs are the tokenizer's own pair encoding under either policy
                    assert enc.ids == whole.ids and enc.type_ids == whole.type_ids
                else:
                    assert len(enc) == max_length and len(enc.type_ids or []) == max_length


def test_a_completion_longer_than_the_budget_is_cut_last(minilm_path: str) -> None:
    fmt = formatter(minilm_path, 32, "head-tail")
    long_answer = " ".join(f"answer{i}" for i in range(100))
    enc = fmt.encode("the short question", long_answer)
    text = fmt.tokenizer.decode(enc.ids).replace(" ", "")
    # The prompt fits in its quarter of the budget whole (no marker), the completion keeps its head.
    assert len(enc) == 32 and "theshortquestion" in text and "answer0" in text and "[…]" not in text
    long_prompt = fmt.encode(f"{QUESTION} {PASSAGES}", long_answer)  # both long: the prompt keeps a quarter
    budget = 32 - 3  # [CLS] A [SEP] B [SEP]
    assert len(long_prompt) == 32 and long_prompt.type_ids is not None
    assert long_prompt.type_ids.count(0) - 2 == budget // 4  # [CLS] and the first [SEP] are segment 0


def test_cut_pair_edge_cases() -> None:
    marker = [-1, -2, -3]
    prompt, answer = list(range(100, 150)), list(range(10))
    # Room for the marker and one token each side: head, marker, tail.
    assert cut_pair(prompt, answer, 15, "head-tail", marker) == ([100, -1, -2, -3, 149], answer, True)
    assert cut_pair(prompt, answer, 15, "left", marker) == (prompt[-5:], answer, True)
    # Too little prompt room for the marker: head-tail falls back to the left cut, never over the budget.
    assert cut_pair(prompt, answer, 14, "head-tail", marker) == (prompt[-4:], answer, True)
    assert cut_pair(prompt, [], 2, "head-tail", marker) == (prompt[-2:], [], True)
    assert cut_pair([], list(range(20)), 5, "head-tail", marker) == ([], list(range(5)), True)
    assert cut_pair([1, 2], [3], 3, "head-tail", marker) == ([1, 2], [3], False)
    # An odd room gives the head the extra token.
    assert cut_pair(prompt, answer, 20, "head-tail", marker)[0] == prompt[:4] + marker + prompt[-3:]
    for budget in range(0, 70):
        for policy in ("left", "head-tail"):
            p, c, _ = cut_pair(prompt, answer, budget, policy, marker)
            assert len(p) + len(c) <= budget


def test_bad_truncation_specs_are_refused(minilm_path: str) -> None:
    from transformers import AutoTokenizer

    from training.tokens import FormatChoiceError, format_spec

    with pytest.raises(FormatError, match="unknown truncation"):
        FormatSpec("pair", 64, truncation="middle")  # type: ignore[arg-type]
    with pytest.raises(FormatError, match="needs the 'pair' formatting"):
        FormatSpec("concat", 64, eos_token_id=2, truncation="head-tail")
    with pytest.raises(FormatChoiceError, match="needs the text-pair formatting"):
        format_spec(AutoTokenizer.from_pretrained(minilm_path), "encoder", 64, "concat", truncation="head-tail")


def _with_meta(src: Path, out: Path, change: Any) -> Path:
    shutil.copytree(src, out)
    meta = json.loads((out / META_FILE).read_text())
    change(meta)
    (out / META_FILE).write_text(json.dumps(meta))
    return out


def test_an_old_schema_bundle_loads_and_means_left(tiny_bundle: Path, tmp_path: Path) -> None:
    current = read_bundle(tiny_bundle)
    assert current.meta.schema_version == 3 and current.meta.formatting.truncation == "left"

    def to_v2(meta: dict[str, Any]) -> None:
        meta["schema_version"] = 2
        del meta["formatting"]["truncation"], meta["formatting"]["truncation_marker"]

    old = read_bundle(_with_meta(tiny_bundle, tmp_path / "v2", to_v2))
    assert old.meta.schema_version == 2 and old.meta.formatting.truncation == "left"
    prompts, answers = [f"{QUESTION} {PASSAGES}", "short"], ["The Vistula.", "fine"]
    old_ids = BundleScorer(old, "fp32", device="cpu").formatter.encode_many(prompts, answers)
    assert old_ids == BundleScorer(current, "fp32", device="cpu").formatter.encode_many(prompts, answers)

    def v2_with_policy(meta: dict[str, Any]) -> None:
        meta["schema_version"] = 2
        meta["formatting"]["truncation"] = "head-tail"

    with pytest.raises(BundleError, match="schema 2 has no truncation"):
        read_bundle(_with_meta(tiny_bundle, tmp_path / "bad", v2_with_policy))
