"""Continuous batching under a token budget. Plain Python: no tensors.

Each step: running sequences first (decodes before chunks of prompts still being prefilled), then waiting ones in
FIFO order while the budget (`max_batch_prefill_tokens` tokens per forward pass) and free blocks last. Long prompts
are prefilled in chunks. When blocks run out, the newest running sequence is preempted: its blocks are freed (they
stay in the prefix cache) and it goes back to the front of the queue to be recomputed later, keeping the tokens it
generated. Nothing fails for lack of memory once a request has been admitted.

With speculation (`speculator` set), a decoding sequence's chunk also carries draft tokens to verify after its last
token. Drafts count against the token budget, never preempt anyone (they get blocks only when blocks are free), and
`accept_drafts` rolls back what verification rejected: the sequence's computed length stops after the accepted
drafts and the blocks past its tokens go back to the pool.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from server.block_manager import BlockManager
from server.speculation import Speculator
from server.sequence import Sequence, SequenceStatus


@dataclass
class ScheduledChunk:
    seq: Sequence
    num_new_tokens: int  # tokens fed this step, starting at seq.num_computed_tokens (drafts included)
    drafts: list[int] = field(default_factory=list)  # speculative ids fed after the sequence's last token

    @property
    def samples(self) -> bool:
        """Whether this chunk reaches the end of the sequence, so the step samples its next token."""
        return self.seq.num_computed_tokens + self.num_new_tokens - len(self.drafts) == self.seq.num_tokens


@dataclass
class SchedulerOutput:
    chunks: list[ScheduledChunk] = field(default_factory=list)
    preempted: list[Sequence] = field(default_factory=list)

    @property
    def num_tokens(self) -> int:
        return sum(c.num_new_tokens for c in self.chunks)

    @property
    def is_empty(self) -> bool:
        return not self.chunks


class Scheduler:
    def __init__(self, block_manager: BlockManager, max_batch_prefill_tokens: int, max_num_seqs: int,
                 speculator: Speculator | None = None):
        self.block_manager = block_manager
        self.speculator = speculator
        self.token_budget = max_batch_prefill_tokens
        self.max_num_seqs = max_num_seqs
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []  # admission order: oldest first
        self.sequences: dict[str, Sequence] = {}  # every unfinished sequence, waiting or running, by request id

    @property
    def num_waiting(self) -> int:
        return len(self.waiting)

    @property
    def num_running(self) -> int:
        return len(self.running)

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def add(self, seq: Sequence) -> None:
        assert seq.request_id not in self.sequences, seq.request_id
        self.sequences[seq.request_id] = seq
        self.waiting.append(seq)

    def get(self, request_id: str) -> Sequence | None:
        return self.sequences.get(request_id)

    def can_ever_fit(self, num_tokens: int) -> bool:
        return self.block_manager.num_blocks_for(num_tokens) <= self.block_manager.num_blocks

    def schedule(self) -> SchedulerOutput:
        out = SchedulerOutput()
        budget = self.token_budget
        # Decodes first: they cost one token each and keep latency flat while long prompts are chunked.
        for seq in sorted(self.running, key=lambda s: (s.num_uncomputed_tokens > 1, s.arrival)):
            if budget == 0:
                break
            if seq.status != SequenceStatus.RUNNING:
                continue  # preempted earlier in this loop
            num_new = min(seq.num_uncomputed_tokens, budget)
            if not self._make_room(seq, num_new, out):
                continue
            chunk = ScheduledChunk(seq, num_new)
            if self.speculator is not None and seq.num_uncomputed_tokens == 1 and budget > 1:
                self._add_drafts(chunk, budget - 1)
            out.chunks.append(chunk)
            budget -= chunk.num_new_tokens
        if not out.preempted:
            budget = self._admit_waiting(budget, out)
        return out

    def _blocks_needed(self, seq: Sequence, num_new: int) -> int:
        return self.block_manager.num_blocks_for(seq.num_computed_tokens + num_new) - len(seq.block_table)

    def _make_room(self, seq: Sequence, num_new: int, out: SchedulerOutput) -> bool:
        """Allocate blocks for seq's next num_new tokens, preempting the newest sequences if needed."""
        needed = self._blocks_needed(seq, num_new)
        while not self.block_manager.can_allocate(needed):
            victim = max(self.running, key=lambda s: s.arrival)
            self.preempt(victim)
            out.preempted.append(victim)
            out.chunks = [c for c in out.chunks if c.seq is not victim]  # it may have been scheduled already
            if victim is seq:
                return False
        seq.block_table.extend(self.block_manager.allocate(needed))
        return True

    def _add_drafts(self, chunk: ScheduledChunk, budget: int) -> None:
        """Give a decode chunk the speculator's drafts, as many as the budget and the free blocks allow."""
        seq = chunk.seq
        drafts = self.speculator.drafts(seq, len(self.running))[:budget]
        if not drafts:
            return
        bm = self.block_manager
        extra = self._blocks_needed(seq, 1 + len(drafts))
        if extra > 0 and not bm.can_allocate(extra):  # drafts never preempt: use what the table already holds
            drafts = drafts[:len(seq.block_table) * bm.block_size - seq.num_computed_tokens - 1]
            extra = 0
        if extra > 0:
            seq.block_table.extend(bm.allocate(extra))
        chunk.drafts = drafts
        chunk.num_new_tokens += len(drafts)

    def _admit_waiting(self, budget: int, out: SchedulerOutput) -> int:
        bm = self.block_manager
        while self.waiting and budget > 0 and len(self.running) < self.max_num_seqs:
            seq = self.waiting[0]
            # Leave at least one token to compute: its logits give the next token.
            hits = [] if seq.params.prompt_logprobs else bm.match_prefix(seq.token_ids, seq.num_tokens - 1)
            num_cached = len(hits) * bm.block_size
            num_new = min(seq.num_tokens - num_cached, budget)
            if not bm.can_admit(hits, num_cached + num_new):
                break  # FIFO: the head waits for blocks; nobody overtakes it
            bm.admit(seq, hits, num_cached + num_new)
            seq.num_computed_tokens = num_cached
            if seq.num_preemptions == 0:
                seq.num_cached_prompt_tokens = num_cached
            seq.status = SequenceStatus.RUNNING
            self.waiting.popleft()
            self.running.append(seq)
            out.chunks.append(ScheduledChunk(seq, num_new))
            budget -= num_new
        return budget

    def preempt(self, seq: Sequence) -> None:
        """Free seq's blocks and requeue it at the front; it will be recomputed from its tokens."""
        self.running.remove(seq)
        self._release(seq)
        seq.status = SequenceStatus.WAITING
        seq.num_preemptions += 1
        self.waiting.appendleft(seq)

    def commit(self, chunk: ScheduledChunk) -> None:
        """After a successful forward pass: the chunk's K/V is cached; publish newly full blocks. A chunk's drafts
        are not committed here: `accept_drafts` does that once they are verified and appended."""
        chunk.seq.num_computed_tokens += chunk.num_new_tokens - len(chunk.drafts)
        self.block_manager.hash_full_blocks(chunk.seq)

    def accept_drafts(self, chunk: ScheduledChunk, num_accepted: int) -> None:
        """After verification and append: the K/V of the first num_accepted drafts is valid (they are the
        sequence's tokens now); the rest is dropped: its slots are past the computed length (overwritten later)
        and its blocks past the sequence's tokens are freed."""
        seq = chunk.seq
        if not chunk.drafts or seq.is_finished:
            return  # a finished sequence has released everything already
        seq.draft.record(len(chunk.drafts), num_accepted)
        seq.num_computed_tokens += num_accepted
        self.block_manager.hash_full_blocks(seq)
        self.block_manager.truncate(seq, seq.num_tokens)

    def finish(self, seq: Sequence, status: SequenceStatus) -> None:
        """Remove a sequence wherever it is and free its blocks at once."""
        assert status.is_finished
        if seq in self.running:
            self.running.remove(seq)
        elif seq in self.waiting:
            self.waiting.remove(seq)
        self._release(seq)
        if self.sequences.get(seq.request_id) is seq:
            del self.sequences[seq.request_id]
        seq.status = status
        if self.speculator is not None and status != SequenceStatus.FINISHED_ERROR:
            # Its output (also one the router stopped at a stop sequence, an abort here) feeds later drafts.
            self.speculator.learn(seq)

    def _release(self, seq: Sequence) -> None:
        self.block_manager.free_sequence(seq)
        seq.num_computed_tokens = 0
