"""Grammar-constrained decoding behind a small interface: compiler (request grammar -> compiled automaton, cached,
built off the hot path), state (per-sequence automaton position), mask (batched logits mask). See README.md."""
