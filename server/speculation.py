"""N-gram (prompt-lookup) speculation: draft proposal, the back-off policy, and the per-sequence bookkeeping.

Plain Python, no tensors (the scheduler calls it). A sequence's drafts are the tokens that followed the most recent
earlier occurrence of its last n-gram in its own prompt + generated tokens, trying the longest n first. Math
chains of thought copy numbers, names and whole phrases from the question and from their own earlier steps, so a
hit often predicts several tokens the model would write anyway; verifying them costs one wider forward pass.

A greedy sequence also looks its last n-gram up in the shared history of finished outputs (`NgramHistory`) and takes
the longer of the two matches: a short answer seldom repeats itself, but a server's answers repeat one another's
wording and layout. On the bundled model's 0-shot arithmetic chains of thought (~30 tokens each) own-text drafts
advance 1.13 tokens per verified step and with the history 2.1 (replayed on 80 held-out answers). Sampled
sequences use their own text only (see NgramHistory). `--speculate-history 0` turns the history off.

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

from collections import OrderedDict
from dataclasses import dataclass, field

from grammars.state import GrammarViolation

NGRAM_SIZES = (4, 3, 2)  # longest first: a longer match is a better predictor
MAX_SPECULATIVE_BATCH = 16  # running sequences above which verification rows are not worth their cost here
SMALL_BATCH = 8  # up to here a draft row is nearly free (the pass is overhead-bound) ...
MIN_ACCEPT_RATE = 0.15  # ... and a sequence keeps proposing down to this acceptance rate;
MIN_ACCEPT_RATE_LARGE = 0.3  # in larger batches rows cost more: a higher rate is needed
ACCEPT_EMA = 0.7  # weight of the past in a sequence's acceptance-rate estimate
PROBE_EVERY = 8  # a sequence below the rate still probes with one draft every this many steps
HISTORY_NGRAMS = 65_536  # n-grams of finished outputs kept for greedy drafting (NgramHistory; 15-17 MB when full)
HISTORY_TOKENS_PER_SEQUENCE = 256  # generated ids of each finished sequence indexed there


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
        return self.match(token_ids, max_drafts)[1]

    def match(self, token_ids: list[int], max_drafts: int) -> tuple[int, list[int]]:
        """(n, drafts): the longest suffix n found earlier in token_ids and what followed it (0, [] if none)."""
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
                return n, token_ids[follow:follow + max_drafts]
        return 0, []

    def record(self, proposed: int, accepted: int) -> None:
        if proposed:
            self.num_proposed += proposed
            self.num_accepted += accepted
            self.accept_rate = ACCEPT_EMA * self.accept_rate + (1 - ACCEPT_EMA) * accepted / proposed


class NgramHistory:
    """n-gram -> the ids that followed its latest occurrence in the outputs of recently finished sequences.

    A second draft source for greedy sequences: the solutions a server writes repeat one another's wording
    ("The answer is", the step layout, units), which a short answer rarely repeats within itself. Each finished
    sequence contributes the n-grams of its generated ids (and of the n - 1 prompt ids before them, so the first
    output tokens are predicted too). Bounded: past max_entries the least recently written n-grams are dropped.
    Sampled sequences never read it: their drafts, hence their random draws, then depend on their own tokens only,
    so a seeded request repeats itself whatever ran before it."""

    def __init__(self, max_entries: int, max_follow: int):
        self.max_entries = max_entries
        self.max_follow = max_follow
        self._follow: OrderedDict[tuple[int, ...], tuple[int, ...]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._follow)

    def add(self, token_ids: list[int], num_prompt_tokens: int) -> None:
        """Index a finished sequence: its first HISTORY_TOKENS_PER_SEQUENCE generated ids (~10 us each, paid in the
        engine's step, so a long output costs a bounded few ms)."""
        start = max(0, num_prompt_tokens - max(NGRAM_SIZES) + 1)
        stop = min(len(token_ids), num_prompt_tokens + HISTORY_TOKENS_PER_SEQUENCE)
        table = self._follow
        # n-grams ending at end - 1, followed by the ids from end on: from the prompt's last id (its continuation is
        # the output's start) to the indexed outputs' end.
        for end in range(max(start + 1, num_prompt_tokens), stop):
            follow = tuple(token_ids[end:end + self.max_follow])
            for n in NGRAM_SIZES:
                if end - n >= start:
                    key = tuple(token_ids[end - n:end])
                    table[key] = follow
                    table.move_to_end(key)
        while len(table) > self.max_entries:
            table.popitem(last=False)

    def match(self, token_ids: list[int], max_drafts: int) -> tuple[int, list[int]]:
        for n in NGRAM_SIZES:
            if len(token_ids) >= n:
                follow = self._follow.get(tuple(token_ids[-n:]))
                if follow is not None:
                    return n, list(follow[:max_drafts])
        return 0, []


class Speculator:
    """Draft proposal for the scheduler: `drafts(seq, batch_size)` -> token ids to verify after seq's last token."""

    def __init__(self, num_speculative: int, max_total_tokens: int, eos_token_ids: tuple[int, ...],
                 max_batch: int = MAX_SPECULATIVE_BATCH, history_ngrams: int = HISTORY_NGRAMS):
        self.num_speculative = num_speculative
        self.max_total_tokens = max_total_tokens
        self.eos_token_ids = tuple(eos_token_ids)
        self.max_batch = max_batch
        self.history = NgramHistory(history_ngrams, num_speculative) if history_ngrams else None

    def learn(self, seq) -> None:
        """A sequence finished: its output's n-grams join the shared history."""
        if self.history is not None and seq.num_generated_tokens:
            self.history.add(seq.token_ids, seq.num_prompt_tokens)

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
        n, drafts = seq.draft.match(seq.token_ids, k)
        if self.history is not None and not params.is_sampling and n < max(NGRAM_SIZES):
            n_history, from_history = self.history.match(seq.token_ids, k)
            if n_history > n:  # the longer match predicts better; on a tie the sequence's own text wins
                drafts = from_history
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
