"""The tokenizer: SentencePiece BPE with byte fallback and split digits (Llama style), saved as a Hugging Face fast
tokenizer with BOS (id 1, prepended by the tokenizer) and EOS (id 2).

Training and serving both encode through the saved `LlamaTokenizerFast`, so the token ids the model was trained on
are exactly those the server feeds it. Requires protobuf (without it the conversion silently yields 3 tokens: checked).
"""
from __future__ import annotations

import io
from collections.abc import Iterable
from pathlib import Path

from slm_train.config import SLMError


def train_tokenizer(lines: Iterable[str], out_dir: Path, vocab_size: int) -> "PreTrainedTokenizerFast":  # noqa: F821
    import sentencepiece as spm

    out_dir.mkdir(parents=True, exist_ok=True)
    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(lines), model_writer=model, model_type="bpe", vocab_size=vocab_size,
            byte_fallback=True, character_coverage=1.0, split_digits=True, unk_id=0, bos_id=1, eos_id=2,
            pad_id=-1, add_dummy_prefix=True, remove_extra_whitespaces=False, minloglevel=2, num_threads=1,
            max_sentence_length=16384,
        )
    except RuntimeError as e:  # e.g. a vocabulary larger than the text supports
        raise SLMError(f"SentencePiece training failed: {e}") from None
    (out_dir / "tokenizer.model").write_bytes(model.getvalue())
    from transformers import LlamaTokenizerFast

    tok = LlamaTokenizerFast.from_pretrained(str(out_dir), add_bos_token=True, add_eos_token=False)
    _check(tok, vocab_size, out_dir)
    tok.save_pretrained(str(out_dir))
    return load_tokenizer(out_dir)


def load_tokenizer(path: Path):
    from transformers import AutoTokenizer

    if not (path / "tokenizer.json").exists() and not (path / "tokenizer.model").exists():
        raise SLMError(f"{path}: no tokenizer.json / tokenizer.model")
    tok = AutoTokenizer.from_pretrained(str(path))
    _check(tok, None, path)
    return tok


def _check(tok, vocab_size: int | None, path: Path) -> None:
    if len(tok) < 16 or (vocab_size is not None and len(tok) != vocab_size):
        raise SLMError(f"{path}: tokenizer has {len(tok)} tokens (is protobuf installed?)")
    if tok.bos_token_id != 1 or tok.eos_token_id != 2:
        raise SLMError(f"{path}: expected BOS=1 and EOS=2, got {tok.bos_token_id} and {tok.eos_token_id}")
