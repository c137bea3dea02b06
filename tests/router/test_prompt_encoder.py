"""PromptEncoder gives exactly transformers' `tokenizer(text)["input_ids"]`: on the tests' SentencePiece tokenizer,
the bundled model's, and a byte-level BPE; with and without special tokens; and it steps aside when the shared
backend carries someone's truncation, or for a class that encodes its own way."""
from __future__ import annotations

from pathlib import Path

import pytest

from router.prompt_encoder import PromptEncoder

REPO = Path(__file__).resolve().parents[2]
TEXTS = ["Question: Natalia sold clips to 48 of her friends in April.\nAnswer:", "", " ", "  leading spaces",
         "naïve café — 東京 ✓ 🎉 done", "tabs\tand\nnew lines\r\n", "<s> literal specials </s> <unk>",
         "x" * 3000, "3 * 4 = 12. 12 + 5 = 17.", "\u00a0non-breaking\u200bzero width"]


def byte_level_bpe():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([t for t in TEXTS if t] * 20, trainer)
    tok.post_processor = processors.TemplateProcessing(single="<|endoftext|> $A", special_tokens=[
        ("<|endoftext|>", tok.token_to_id("<|endoftext|>"))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>")


def bundled():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(REPO / "models" / "rho-math-tiny"))


@pytest.mark.parametrize("which", ["tests", "bundled", "byte-level"])
def test_same_ids_as_transformers(tokenizer, which):
    tok = {"tests": lambda: tokenizer, "bundled": bundled, "byte-level": byte_level_bpe}[which]()
    encoder = PromptEncoder(tok)
    assert encoder.direct  # these all take the Rust tokenizer's own call
    for text in TEXTS:
        for special in (True, False):
            assert encoder.encode(text, special) == tok(text, add_special_tokens=special)["input_ids"], text


def test_steps_aside_while_the_backend_truncates(tokenizer):
    encoder = PromptEncoder(tokenizer)
    text = TEXTS[0]
    full = tokenizer(text)["input_ids"]
    try:
        tokenizer(text, truncation=True, max_length=3)  # transformers leaves truncation set on the shared backend
        assert not encoder.direct
        assert encoder.encode(text) == full  # through transformers, which turns the truncation off again
        assert encoder.direct and encoder.encode(text) == full
    finally:
        tokenizer.backend_tokenizer.no_truncation()


def test_a_class_that_encodes_its_own_way_goes_through_transformers(tokenizer):
    class Shouting(type(tokenizer)):
        def __call__(self, text, **kwargs):
            return super().__call__(text.upper(), **kwargs)

    shouting = Shouting.from_pretrained(tokenizer.name_or_path)
    encoder = PromptEncoder(shouting)
    assert not encoder.direct
    ids = encoder.encode("hello there")
    assert ids == shouting("hello there")["input_ids"] != tokenizer("hello there")["input_ids"]
