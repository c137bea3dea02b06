"""Document sources: the built-in `arith` corpora (clean set, noisy mix) and user files (.txt, .jsonl, .parquet).

Every source yields documents as lists of (text, label) segments; label 0 is clean (user files are all clean).
`builtin_kinds` gives, for a built-in corpus, each kind's endless document stream and its share of the tokens.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from slm_train.config import SLMError
from slm_train.noise import MIX, documents_of

Segments = list[tuple[str, int]]


def builtin_kinds(corpus: str, seed: int, wrong_share: float) -> dict[str, tuple[Iterator[Segments], float]]:
    """kind -> (documents, token share); each kind has its own seed derived from the corpus seed."""
    if corpus == "clean":
        return {"clean": (documents_of("clean", seed), 1.0)}
    return {kind: (documents_of(kind, seed * 100 + i, wrong_share), share) for i, (kind, share) in
            enumerate(MIX.items())}


def file_documents(paths: list[str]) -> Iterator[Segments]:
    if not paths:
        raise SLMError("--corpus files needs at least one path in --files")
    for p in map(Path, paths):
        if not p.is_file():
            raise SLMError(f"{p}: no such file")
        for text in _read(p):
            if text.strip():
                yield [(text, 0)]


def _read(path: Path) -> Iterator[str]:
    if path.suffix == ".txt":
        # Documents are separated by a line holding only <|endoftext|> (else the file is one document).
        yield from path.read_text(encoding="utf-8").split("\n<|endoftext|>\n")
    elif path.suffix == ".jsonl":
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
            if line.strip():
                yield _text_field(json.loads(line), path, i + 1)
    elif path.suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        if "text" not in table.column_names:
            raise SLMError(f"{path}: no 'text' column (columns: {table.column_names})")
        yield from (t for t in table.column("text").to_pylist() if t)
    else:
        raise SLMError(f"{path}: unsupported corpus file type {path.suffix!r} (use .txt, .jsonl or .parquet)")


def _text_field(row: object, path: Path, line: int) -> str:
    if not isinstance(row, dict) or not isinstance(row.get("text"), str):
        raise SLMError(f"{path}:{line}: each JSON line needs a string 'text' field")
    return row["text"]
