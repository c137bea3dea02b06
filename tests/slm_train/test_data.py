"""The arith corpora: clean generator, held-out disjointness, wrong-step propagation and digit labels, the noisy
mix, first-fit packing with masked padding, the tokenizer, user files (arith.py, noise.py, packing.py, data.py)."""
from __future__ import annotations

import json
import random
import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from slm_train.arith import KINDS, Problem, heldout_problems, make_problem, training_problems
from slm_train.config import DataConfig, SLMError
from slm_train.data import PackedData, build, valid_targets
from slm_train.evaluate import extract_answer
from slm_train.noise import LABELS, MIX, PAD, RESULT, WRONG, labelled_solution, problem_document, wrong_steps
from slm_train.packing import first_fit
from slm_train.tokenizer import load_tokenizer

STEP = re.compile(r"(\d+) ([-+*]) (\d+) = (\d+)\.")


def test_clean_problems_are_true_2_to_3_step_arithmetic_in_the_eval_format():
    r = random.Random(0)
    kinds = set()
    for _ in range(3000):
        p = make_problem(r)
        kinds.add(len(p.steps))
        assert p.text().startswith("Question: ") and "\nAnswer: " in p.text()
        assert p.solution.endswith(f" The answer is {p.answer}.") and extract_answer(p.solution) == p.answer
        steps = STEP.findall(p.solution)
        assert len(steps) == len(p.steps) and 0 <= p.answer < 100
        for a, op, b, c in steps:
            assert eval(f"{a} {op} {b}") == int(c) and int(c) >= 0
        assert all(2 <= int(x) <= 9 for x in re.findall(r"\d+", p.question) if "$" not in p.question)
    assert kinds == {2, 3} and len(KINDS) == 8


def test_heldout_problems_never_appear_in_training_generators():
    held = {p.question for p in heldout_problems(400)}
    assert len(held) == 400 and heldout_problems(5) == heldout_problems(5)
    gen = training_problems(random.Random(3))
    assert not any(next(gen).question in held for _ in range(20_000))


def _example() -> Problem:
    # money: 7 * 6 = 42. 44 - 42 = 2.
    return Problem("Tom has $44. Tom buys 7 pens for $6 each. How many dollars does Tom have left?",
                   ((7, "*", 6), (44, "-", -1)), 2)


def test_a_wrong_step_propagates_and_only_differing_digits_are_labelled_wrong():
    p = _example()
    segs = labelled_solution(p, [43, 1])  # 7 * 6 = 43 (wrong), then 44 - 43 = 1 and the answer 1
    text = "".join(t for t, _ in segs)
    assert text == " 7 * 6 = 43. 44 - 43 = 1. The answer is 1."
    wrong = [i for i, (_, label) in enumerate(segs) if label == WRONG]
    chars = [t for t, _ in segs]
    assert [chars[i] for i in wrong] == ["3", "3", "1", "1"]  # the "4" of 43 equals the truth's: not wrong
    assert [t for t, label in segs if label == RESULT] == ["4", "2"] or "4" in [t for t, label in segs
                                                                             if label == RESULT]


def test_wrong_steps_are_consistent_with_the_later_steps():
    r = random.Random(5)
    for _ in range(500):
        p = make_problem(r)
        results = wrong_steps(p, r)
        if results is None:
            continue
        text = "".join(t for t, _ in labelled_solution(p, results))
        steps = STEP.findall(text)
        bad = [i for i, (a, op, b, c) in enumerate(steps) if eval(f"{a} {op} {b}") != int(c)]
        assert len(bad) <= 1  # one wrong step (a wrong operation leaves every line "true" for another op)
        assert f"The answer is {results[-1]}." in text and results[-1] != p.answer or bad == []
        for i in range(1, len(steps)):  # a later step uses the (possibly wrong) previous result
            assert str(results[i - 1]) in (steps[i][0], steps[i][2])


def test_problem_documents_without_errors_have_no_wrong_label():
    r = random.Random(1)
    for _ in range(200):
        assert all(label != WRONG for _, label in problem_document(make_problem(r), r, 0.0))


def test_noisy_corpus_has_the_mix_and_whole_documents(toy_corpora):
    data = PackedData(toy_corpora.noisy)
    labels = np.asarray(data.labels)
    real = labels[labels != PAD]
    share = {name: float((real == i).mean()) for i, name in enumerate(LABELS)}
    assert abs(share["duplicate"] - MIX["duplicate"]) < 0.05 and abs(share["boilerplate"] - MIX["boilerplate"]) < 0.05
    assert share["wrong"] > 0 and share["result"] > 0
    tokens = np.asarray(data.tokens)
    for row, lab in zip(tokens, labels):  # whole documents (BOS ... EOS), then padding only; only noise documents
        real_len = int((lab != PAD).sum())  # longer than a row are cut (a row may start inside one)
        assert (lab[real_len:] == PAD).all()
        assert row[0] == 1 or lab[0] > RESULT
    assert data.meta["padding"] < 0.2


def test_first_fit_packs_whole_documents_and_masks_padding():
    docs = [([1, 5, 2], [0, 0, 0]), ([1, 6, 6, 6, 2], [3, 3, 3, 3, 3]), ([1, 7, 2], [0, 0, 0])]
    tokens, labels = first_fit(docs, seq_len=6, pad_id=2, close_below=1)
    assert tokens.tolist() == [[1, 5, 2, 1, 7, 2], [1, 6, 6, 6, 2, 2]]  # the third document fills row 0's gap
    assert labels[1].tolist() == [3, 3, 3, 3, 3, PAD]
    valid = valid_targets(torch.from_numpy(labels.astype(np.int64)))
    assert valid.tolist() == [[False, True, True, True, True, True], [False, True, True, True, True, False]]


def test_tokenizer_splits_digits_and_adds_bos_like_the_server(toy_corpora):
    tok = load_tokenizer(PackedData(toy_corpora.clean).tokenizer_dir)
    assert len(tok) == 1024 and tok.bos_token_id == 1 and tok.eos_token_id == 2
    ids = tok("Question: What is 42 + 3?\nAnswer:").input_ids
    assert ids[0] == 1 and ids[-1] != 2
    pieces = tok.convert_ids_to_tokens(tok("= 42", add_special_tokens=False).input_ids)
    assert pieces[-2:] == ["4", "2"]
    assert tok.decode(ids, skip_special_tokens=True) == "Question: What is 42 + 3?\nAnswer:"


def test_clean_set_is_clean(toy_corpora):
    labels = np.asarray(PackedData(toy_corpora.clean).labels)
    assert set(np.unique(labels).tolist()) <= {LABELS.index("clean"), RESULT, PAD}


def test_user_corpora_txt_jsonl_parquet(tmp_path, toy_corpora):
    (tmp_path / "a.txt").write_text("First doc 1 + 1 = 2.\n<|endoftext|>\nSecond doc.")
    (tmp_path / "b.jsonl").write_text(json.dumps({"text": "Third doc."}) + "\n\n" + json.dumps({"text": "4th"}) + "\n")
    pq.write_table(pa.table({"text": ["Fifth doc.", "Sixth doc."]}), tmp_path / "c.parquet")
    files = [str(tmp_path / n) for n in ("a.txt", "b.jsonl", "c.parquet")]
    out = build(DataConfig(out_dir=str(tmp_path / "user"), corpus="files", files=files, seq_len=8,
                           tokenizer=str(PackedData(toy_corpora.clean).tokenizer_dir), num_tokens=10**6))
    data = PackedData(out)
    assert data.meta["num_documents"] >= 6 and (np.asarray(data.tokens) == 1).sum() >= 6
    assert set(np.unique(np.asarray(data.labels)).tolist()) <= {0, PAD}


@pytest.mark.parametrize("content,name,match", [
    ("{\"txt\": 1}\n", "bad.jsonl", "'text' field"),
    ("x", "bad.csv", "unsupported corpus file type"),
])
def test_user_corpus_errors_are_typed(tmp_path, toy_corpora, content, name, match):
    (tmp_path / name).write_text(content)
    with pytest.raises(SLMError, match=match):
        build(DataConfig(out_dir=str(tmp_path / "o"), corpus="files", files=[str(tmp_path / name)],
                         tokenizer=str(PackedData(toy_corpora.clean).tokenizer_dir)))
    with pytest.raises(SLMError, match="no such file"):
        build(DataConfig(out_dir=str(tmp_path / "o"), corpus="files", files=[str(tmp_path / "missing.txt")],
                         tokenizer=str(PackedData(toy_corpora.clean).tokenizer_dir)))
