"""Corpora, labels, tokenizer and packing (data.py, corpora.py, noise.py, math_corpus.py, tokenizer.py)."""
from __future__ import annotations

import json
import random

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from slm_train.config import DataConfig, SLMError
from slm_train.data import PackedData, build
from slm_train.evaluate import extract_answer
from slm_train.math_corpus import ALL_KINDS, heldout_problems
from slm_train.noise import LABELS, WRONG, noisy_document
from slm_train.tokenizer import load_tokenizer


def test_clean_problems_are_correct_and_in_the_eval_format():
    r = random.Random(0)
    for kind in ALL_KINDS:
        p = kind(r, 20)
        assert p.text().startswith("Question: ") and "\nAnswer: " in p.text()
        assert p.solution.endswith(f"The answer is {p.answer}.")
        assert extract_answer(p.solution) == p.answer
    # every "a op b = c" step in a solution is true arithmetic
    import re

    for p in heldout_problems(200, 20, seed=5):
        for a, op, b, c in re.findall(r"(\d+) ([-+*/]) (\d+) = (\d+)", p.solution):
            assert eval(f"{a} {op} {b}") == int(c), p.solution


def test_generators_are_seeded():
    assert heldout_problems(5, 20, seed=3) == heldout_problems(5, 20, seed=3)
    assert heldout_problems(5, 20, seed=3) != heldout_problems(5, 20, seed=4)


def test_noisy_documents_label_every_noise_span():
    r = random.Random(1)
    docs = [noisy_document(r, 20) for _ in range(300)]
    seen = {label for d in docs for _, label in d}
    assert seen == set(range(len(LABELS)))
    for d in docs:
        for text, label in d:
            if label == WRONG:
                assert text.isdigit()


def test_packed_corpus_aligns_tokens_and_labels(toy_corpora):
    data = PackedData(toy_corpora.noisy)
    tok = load_tokenizer(data.tokenizer_dir)
    assert len(tok) == data.meta["vocab_size"] == 1024 and tok.bos_token_id == 1 and tok.eos_token_id == 2
    flat, labels = np.asarray(data.tokens).ravel(), np.asarray(data.labels).ravel()
    assert (flat == 1).sum() > 10 and (flat == 2).sum() > 10  # documents separated by BOS ... EOS
    assert labels[flat == 1].max() == 0
    # tokens labelled as wrong numbers decode to digits; boilerplate tokens decode to boilerplate text
    wrong = tok.decode(flat[labels == WRONG].tolist()).replace(" ", "")
    assert wrong and wrong.isdigit()
    boiler = tok.decode(flat[labels == LABELS.index("boilerplate")][:200].tolist())
    assert any(w in boiler for w in ("Home", "Share", "Copyright", "Posted", "Advertisement", "Tags", "Click"))
    share = (labels != 0).mean()
    assert 0.15 < share < 0.6, share


def test_the_model_tokenizer_adds_bos_like_the_server(toy_corpora):
    tok = load_tokenizer(PackedData(toy_corpora.clean).tokenizer_dir)
    ids = tok("Question: What is 2 + 3?\nAnswer:").input_ids
    assert ids[0] == 1 and ids[-1] != 2
    assert tok.decode(ids, skip_special_tokens=True) == "Question: What is 2 + 3?\nAnswer:"


def test_user_corpora_txt_jsonl_parquet(tmp_path, toy_corpora):
    (tmp_path / "a.txt").write_text("First doc 1 + 1 = 2.\n<|endoftext|>\nSecond doc.")
    (tmp_path / "b.jsonl").write_text(json.dumps({"text": "Third doc."}) + "\n\n" + json.dumps({"text": "4th"}) + "\n")
    pq.write_table(pa.table({"text": ["Fifth doc.", "Sixth doc."]}), tmp_path / "c.parquet")
    files = [str(tmp_path / n) for n in ("a.txt", "b.jsonl", "c.parquet")]
    out = build(DataConfig(out_dir=str(tmp_path / "user"), corpus="files", files=files, seq_len=8,
                           tokenizer=str(PackedData(toy_corpora.clean).tokenizer_dir), num_tokens=10**6))
    data = PackedData(out)
    flat = np.asarray(data.tokens).ravel()
    assert (flat == 1).sum() >= 5  # six documents, the last row may be cut
    assert np.asarray(data.labels).max() == 0


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
