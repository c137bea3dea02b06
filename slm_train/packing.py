"""First-fit packing of whole documents into fixed-length rows, padding masked by the PAD label.

Each document (BOS ... EOS) goes whole into the first open row with room for it; a row with less room than
`close_below` tokens is closed, and at most `window` rows stay open (the oldest is closed first), which keeps the
packing linear in the number of documents. Documents longer than a row are cut into row-sized pieces (user files).
The tail of a row is filled with `pad_id` tokens labelled PAD: no loss, no selection, no evaluation.
"""
from __future__ import annotations

import numpy as np

from slm_train.noise import PAD


def split_long(doc: tuple[list[int], list[int]], seq_len: int) -> list[tuple[list[int], list[int]]]:
    ids, labels = doc
    return [(ids[i:i + seq_len], labels[i:i + seq_len]) for i in range(0, len(ids), seq_len)]


def first_fit(docs: list[tuple[list[int], list[int]]], seq_len: int, pad_id: int, window: int = 64,
              close_below: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """(tokens, labels), both (num_rows, seq_len): uint16 ids and uint8 labels (PAD where padded)."""
    rows: list[tuple[list[int], list[int]]] = []
    open_rows: list[int] = []  # indices into rows, oldest first
    for doc in docs:
        for ids, labels in split_long(doc, seq_len):
            slot = next((r for r in open_rows if seq_len - len(rows[r][0]) >= len(ids)), None)
            if slot is None:
                rows.append(([], []))
                slot = len(rows) - 1
                open_rows.append(slot)
                if len(open_rows) > window:
                    open_rows.pop(0)
            rows[slot][0].extend(ids)
            rows[slot][1].extend(labels)
            if seq_len - len(rows[slot][0]) < close_below:
                open_rows.remove(slot)
    tokens = np.full((len(rows), seq_len), pad_id, dtype=np.uint16)
    labels = np.full((len(rows), seq_len), PAD, dtype=np.uint8)
    for i, (ids, lab) in enumerate(rows):
        tokens[i, :len(ids)] = ids
        labels[i, :len(lab)] = lab
    return tokens, labels
