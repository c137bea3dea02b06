"""N-gram (prompt-lookup) speculation: draft proposal, the back-off policy, and the per-sequence bookkeeping.

Plain Python, no tensors (the scheduler calls it). A sequence's drafts are the tokens that followed the most recent
earlier occurrence of its last n-gram in its own prompt + generated tokens, trying the longest n first. Math
chains of thought copy numbers, names and whole phrases from the question and from their own earlier steps, so a
hit often predicts several tokens the model would write anyway; verifying them costs one wider forward pass.

Drafts are cut where they could not be emitted anyway: at the length budget (the target's own token always follows
the accepted drafts), after a stop (EOS) token, and before the first token the sequence's grammar forbids (the
grammar state is copied, never advanced here).

Back-off (`Speculator.num_drafts`): a draft length per sequence that follows its acceptance rate (an EMA), so a
sequence whose drafts keep being rejected proposes fewer, then none but a short probe every few steps (its text may
start repeating later). Larger batches ask for a higher rate. The cost side, measured on the 2-core CPU box with the
C++ attention (`rho-bench speculate --break-even`: forward + verify of B sequences with 0, 2, 5 drafts each): 5
drafts per sequence cost 1.5x (B=1) to 1.8-2.3x (B=32) of a plain decode step, 2 drafts 1.2x to 1.65x, on the
bundled 1M and the random 7.5M model. At the CoT acceptance measured (~0.45-0.5) drafts pay up to 16 sequences; at
32 the bundled model measured 0.92-1.00x (greedy) and 0.90-1.00x (sampled) across runs, so above
MAX_SPECULATIVE_BATCH = 16 nothing is proposed (a 32-request burst speculates once it drains below 16). (A slower
rate estimate, the whole record with a prior, proposed more, kept no more, and measured worse: 1.28x vs 1.59x at
batch 1, 0.90x vs 1.00x on sampled text.)
"""
from __future__ import annotations

from dataclasses import dataclass, field

from grammars.state import GrammarViolation

NGRAM_SIZES = (4, 3, 2)  # longest first: a longer match is a better predictor
MAX_SPECULATIVE_BATCH = 16  # running sequences above which verification rows are not worth their cost here
SMALL_BATCH = 8  # up to here a draft row is nearly free (the pass is overhead-bound) ...
MIN_ACCEPT_RATE = 0.15  # ... and a sequence keeps proposing down to this acceptance rate;
MIN_ACCEPT_RATE_LARGE = 0.3  # in larger batches rows cost more: a higher rate is needed
ACCEPT_EMA = 0.7  # weight of the past in a sequence's acceptance-rate estimate
PROBE_EVERY = 8  # a sequence below the rate still probes with one draft every this many steps


@dataclass
class DraftState:
    """One sequence's n-gram index and acceptance record (hangs off `Sequence.draft`)."""

    # n-gram (tuple of n ids) -> position just after its most recent occurrence, for occurrences ending before
    # `num_indexed` (the newest n-gram, the one looked up, is never in the index when it is looked up).
    index: dict[tuple[int, ...], int] = field(default_factory=dict)
    num_indexed: int = 0
    accept_rate: float = 0.6  # a hopeful start: every sequence tries, with 4 of 5 drafts; the record then decides
    steps_since_probe: int = 0
    num_proposed: int = 0
    num_accepted: int = 0

    def propose(self, token_ids: list[int], max_drafts: int) -> list[int]:
        """Up to max_drafts ids that followed the latest earlier occurrence of the longest matching suffix."""
        n_tokens = len(token_ids)
        for end in range(max(self.num_indexed, 1), n_tokens):  # index n-grams ending at end - 1, before the last
            for n in NGRAM_SIZES:
                if end >= n:
                    self.index[tuple(token_ids[end - n:end])] = end
        self.num_indexed = max(self.num_indexed, n_tokens)
        for n in NGRAM_SIZES:
            if n_tokens <= n:
                continue
            follow = self.index.get(tuple(token_ids[n_tokens - n:]))
            if follow is not None and follow < n_tokens:
                return token_ids[follow:follow + max_drafts]
        return []

    def record(self, proposed: int, accepted: int) -> None:
        if proposed:
            self.num_proposed += proposed
            self.num_accepted += accepted
            self.accept_rate = ACCEPT_EMA * self.accept_rate + (1 - ACCEPT_EMA) * accepted / proposed


class Speculator:
    """Draft proposal for the scheduler: `drafts(seq, batch_size)` -> token ids to verify after seq's last token."""

    def __init__(self, num_speculative: int, max_total_tokens: int, eos_token_ids: tuple[int, ...],
                 max_batch: int = MAX_SPECULATIVE_BATCH):
        self.num_speculative = num_speculative
        self.max_total_tokens = max_total_tokens
        self.eos_token_ids = tuple(eos_token_ids)
        self.max_batch = max_batch

    def num_drafts(self, state: DraftState, batch_size: int) -> int:
        """How many drafts this sequence may propose now (the back-off policy)."""
        if batch_size > self.max_batch:
            return 0
        if state.accept_rate >= (MIN_ACCEPT_RATE if batch_size <= SMALL_BATCH else MIN_ACCEPT_RATE_LARGE):
            # Expected accepted length grows with the rate; rejected rows are waste, so propose about what the
            # rate says will be kept, plus one.
            return max(1, min(self.num_speculative, round(self.num_speculative * state.accept_rate) + 1))
        state.steps_since_probe += 1
        if state.steps_since_probe >= PROBE_EVERY:
            state.steps_since_probe = 0
            return 1
        return 0

    def drafts(self, seq, batch_size: int) -> list[int]:
        """Draft ids for a decoding sequence (its one uncomputed token is its last), already cut to what could be
        emitted: length budget, stop tokens, grammar."""
        if seq.draft is None:
            seq.draft = DraftState()
        params = seq.params
        # The target's own token follows the accepted drafts: leave room for it in both length limits.
        room = min(params.max_new_tokens - seq.num_generated_tokens, self.max_total_tokens - seq.num_tokens) - 1
        k = min(self.num_drafts(seq.draft, batch_size), room)
        if k <= 0:
            return []
        drafts = seq.draft.propose(seq.token_ids, k)
        return self._cut(seq, drafts)

    def _cut(self, seq, drafts: list[int]) -> list[int]:
        stop_ids = seq.params.stop_token_ids or self.eos_token_ids
        state = seq.grammar_state.copy() if seq.grammar_state is not None else None
        for i, token in enumerate(drafts):
            is_stop = token in stop_ids
            if state is not None:
                if is_stop and state.can_end():
                    return drafts[:i + 1]
                try:
                    state.advance(token)
                except GrammarViolation:  # the mask would forbid it: no use verifying it or anything after it
                    return drafts[:i]
            if is_stop and not seq.params.ignore_eos:
                return drafts[:i + 1]  # nothing after a stop token could be emitted
        return drafts
