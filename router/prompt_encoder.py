"""Prompt text -> token ids, exactly as `tokenizer(text, add_special_tokens=...)["input_ids"]`, but through the Rust
tokenizer's single-text `encode` where that gives the same ids.

Why: transformers sends even one text through `Tokenizer.encode_batch`, which hands it to tokenizers' rayon thread
pool; on a small machine those pool threads wake and spin on the cores the engine's OpenMP threads are using. The
single `encode` runs on the calling thread. Measured (py-spy on the HTTP thread of rho-serve under `rho-bench serve`'s
load, bundled model, 32 concurrent): tokenization went from ~17% of that thread's samples to ~3%.

The direct call is taken only when it cannot differ: a transformers Rust-backed tokenizer class that does not
override how it encodes, and, checked on every call, a backend with no truncation or padding configured (transformers
sets those on the shared backend when some other caller asks for them) and transformers' special-token splitting.
Anything else goes through transformers.
"""
from __future__ import annotations

_ENCODE_METHODS = ("__call__", "_call_one", "encode_plus", "_encode_plus", "_batch_encode_plus")


def _rust_base():
    """transformers' base class of Rust-backed tokenizers (TokenizersBackend in 5.x, PreTrainedTokenizerFast in 4.x)."""
    try:
        from transformers.tokenization_utils_tokenizers import TokenizersBackend
        return TokenizersBackend
    except ImportError:
        from transformers import PreTrainedTokenizerFast
        return PreTrainedTokenizerFast


class PromptEncoder:
    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        base = _rust_base()
        backend = getattr(tokenizer, "backend_tokenizer", None)
        plain = isinstance(tokenizer, base) and all(
            getattr(type(tokenizer), name, None) is getattr(base, name, None) for name in _ENCODE_METHODS)
        self.backend = backend if plain and hasattr(backend, "encode") else None

    @property
    def direct(self) -> bool:
        """Whether encode() can take the Rust tokenizer's own call now."""
        backend = self.backend
        return (backend is not None and backend.truncation is None and backend.padding is None
                and backend.encode_special_tokens == bool(getattr(self.tokenizer, "split_special_tokens", False)))

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        if self.direct:
            return self.backend.encode(text, add_special_tokens=add_special_tokens).ids
        return self.tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"]
