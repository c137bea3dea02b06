"""Incremental detokenization on the real SentencePiece tokenizer, and stop matching across/inside tokens."""
from __future__ import annotations

import pytest

from router.detokenizer import IncrementalDetokenizer, StopMatcher

TEXTS = ["Hello world, this is a test.", "naïve café — 東京 ✓ 🎉 done", "  two  spaces\nnew line\tand tab"]


@pytest.mark.parametrize("text", TEXTS)
def test_deltas_concatenate_to_full_decode(tokenizer, text):
    prompt = tokenizer("Prompt:")["input_ids"]
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    detok = IncrementalDetokenizer(tokenizer, prompt)
    deltas = [detok.add(i) for i in ids] + [detok.flush()]
    full = tokenizer.decode(prompt + ids, skip_special_tokens=True)
    prompt_text = tokenizer.decode(prompt, skip_special_tokens=True)
    assert prompt_text + "".join(deltas) == full
    assert all("\ufffd" not in d for d in deltas)  # multi-byte characters are held until complete


def test_special_tokens_add_no_text(tokenizer):
    detok = IncrementalDetokenizer(tokenizer, tokenizer("Hi")["input_ids"])
    assert detok.add(tokenizer.eos_token_id, special=True) == ""


def test_keep_mode_keeps_stop_and_drops_the_rest():
    m = StopMatcher(["\nUser:"])
    assert m.feed("Sure.\nUs") == ("Sure.\nUs", None)
    assert m.feed("er: and more") == ("er:", "\nUser:")
    assert m.output == "Sure.\nUser:" and m.text_before_stop == "Sure."


def test_cut_mode_holds_back_possible_stop_prefix():
    m = StopMatcher(["</s>", "END"], cut=True)
    assert m.feed("abc<") == ("abc", None)  # "<" may start "</s>"
    assert m.feed("b>") == ("<b>", None)  # it did not
    assert m.feed("xEN") == ("x", None)
    assert m.feed("D tail") == ("", "END")
    assert m.output == "abc<b>x"


def test_stop_inside_one_token_and_earliest_wins():
    m = StopMatcher(["lo w", "world"])
    assert m.feed("hello world") == ("hello w", "lo w")
    m = StopMatcher(["zz"], cut=True)
    assert m.feed("ab") == ("ab", None) and m.flush() == ""
    m = StopMatcher(["zz"], cut=True)
    assert m.feed("az") == ("a", None) and m.flush() == "z"  # released at the end without a match


def test_token_texts_alone_for_tgi_with_leading_space_for_openai(tokenizer):
    """TokenTexts.text is the token decoded alone (TGI's top tokens and prefill); .piece keeps the leading space a
    SentencePiece decoder drops from a text's first token (OpenAI logprobs); both views of one cache."""
    from router.detokenizer import TokenTexts

    texts = TokenTexts(tokenizer)
    spaced = next(i for i in range(tokenizer.vocab_size)
                  if tokenizer.convert_ids_to_tokens(i).startswith("\u2581") and len(tokenizer.convert_ids_to_tokens(i)) > 2)
    word = tokenizer.convert_ids_to_tokens(spaced)[1:]
    assert texts.text(spaced) == word
    assert texts.piece(spaced) == " " + word
    assert texts.bytes(spaced) == list((" " + word).encode())
    eos = tokenizer.eos_token_id
    assert texts.text(eos) == texts.piece(eos) == tokenizer.eos_token  # special tokens as written
    byte_piece = tokenizer.convert_tokens_to_ids("<0xE2>")
    if byte_piece != tokenizer.unk_token_id:  # byte-fallback vocabularies: the byte itself
        assert texts.bytes(byte_piece) == [0xE2]


def test_rust_stream_gives_the_python_windows_text(tokenizer):
    """The DecodeStream path (fast tokenizers) against the Python window decodes, token by token, over random ids
    (byte pieces and broken characters included) and over real text, flush included."""
    import random

    rng = random.Random(0)
    special = set(tokenizer.all_special_ids)
    sequences = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in TEXTS]
    sequences += [[rng.randrange(tokenizer.vocab_size) for _ in range(rng.randint(1, 60))] for _ in range(200)]
    prompt = tokenizer("Prompt:")["input_ids"]
    for ids in sequences:
        fast = IncrementalDetokenizer(tokenizer, prompt)
        slow = IncrementalDetokenizer(tokenizer, prompt)
        slow._stream = None  # the Python path
        assert fast._stream is not None
        for i in ids:
            assert fast.add(i, i in special) == slow.add(i, i in special), ids
        assert fast.flush() == slow.flush(), ids
