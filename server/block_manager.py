"""The paged-KV block allocator and prefix cache. Plain Python: block ids and token ids, no tensors.

The scheduler talks to it in verbs (match_prefix, can_admit / admit, can_allocate / allocate, hash_full_blocks,
truncate, free_sequence); block records, ref counts and hashes stay in here.

Invariants:
- A block is either referenced (ref_count > 0, owned by one or more sequences) or free (in `free_blocks`).
- A free block may still hold a cached prefix (its hash stays in `cached_blocks`) until it is reused: the free list
  is kept in least-recently-used order, so allocation evicts the oldest cached content first.
- A full block is keyed by a chained hash of (parent block's hash, its tokens); a prefix match walks block by block
  and stops at the first miss, so a hit always covers a whole prefix.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence as Seq
from dataclasses import dataclass

from server.sequence import Sequence

NO_HASH = -1


@dataclass(slots=True)
class Block:
    block_id: int
    ref_count: int = 0
    hash: int = NO_HASH
    token_ids: tuple[int, ...] = ()  # kept to rule out hash collisions on lookup


def chain_hash(parent_hash: int, token_ids: tuple[int, ...]) -> int:
    return hash((parent_hash, token_ids))


class BlockManager:
    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool = True):
        assert num_blocks > 0 and block_size > 0
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.blocks = [Block(i) for i in range(num_blocks)]
        self.free_blocks: OrderedDict[int, None] = OrderedDict((i, None) for i in range(num_blocks))
        self.cached_blocks: dict[int, int] = {}  # chain hash -> block id

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    @property
    def num_free_blocks(self) -> int:
        return len(self.free_blocks)

    @property
    def num_used_blocks(self) -> int:
        return self.num_blocks - self.num_free_blocks

    def num_blocks_for(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    def ref_count(self, block_id: int) -> int:
        return self.blocks[block_id].ref_count

    # ----- prefix cache -----
    def match_prefix(self, token_ids: Seq[int], max_tokens: int) -> list[int]:
        """Block ids caching the longest prefix of token_ids (whole blocks, at most max_tokens tokens). Read-only."""
        if not self.enable_prefix_caching:
            return []
        matched: list[int] = []
        parent = NO_HASH
        for start in range(0, max_tokens - self.block_size + 1, self.block_size):
            chunk = tuple(token_ids[start:start + self.block_size])
            parent = chain_hash(parent, chunk)
            block_id = self.cached_blocks.get(parent)
            if block_id is None or self.blocks[block_id].token_ids != chunk:
                break
            matched.append(block_id)
        return matched

    def can_admit(self, hits: list[int], num_tokens: int) -> bool:
        """Whether a sequence can get blocks for its first num_tokens tokens, the first len(hits) from the cache.
        A cached block that is free leaves the free list when taken, so it counts against it."""
        revived = sum(1 for b in hits if self.blocks[b].ref_count == 0)
        return self.num_blocks_for(num_tokens) - len(hits) + revived <= self.num_free_blocks

    def admit(self, seq: Sequence, hits: list[int], num_tokens: int) -> None:
        """Give seq its block table for num_tokens tokens: the cached hits (shared), then fresh blocks."""
        assert not seq.block_table and self.can_admit(hits, num_tokens)
        for block_id in hits:
            block = self.blocks[block_id]
            if block.ref_count == 0:
                del self.free_blocks[block_id]
            block.ref_count += 1
        seq.block_table = hits + self.allocate(self.num_blocks_for(num_tokens) - len(hits))
        seq.block_hashes = [self.blocks[b].hash for b in hits]

    def hash_full_blocks(self, seq: Sequence) -> None:
        """Publish seq's blocks that its computed tokens have filled since the last call, under their chain hashes."""
        parent = seq.block_hashes[-1] if seq.block_hashes else NO_HASH
        for i in range(len(seq.block_hashes), seq.num_computed_tokens // self.block_size):
            tokens = tuple(seq.token_ids[i * self.block_size:(i + 1) * self.block_size])
            parent = self._publish(seq.block_table[i], parent, tokens)
            seq.block_hashes.append(parent)

    def _publish(self, block_id: int, parent_hash: int, token_ids: tuple[int, ...]) -> int:
        """Cache a full, computed block under its chain hash; returns the hash (the next block's parent)."""
        block_hash = chain_hash(parent_hash, token_ids)
        if not self.enable_prefix_caching:
            return block_hash
        block = self.blocks[block_id]
        if block.hash == NO_HASH and block_hash not in self.cached_blocks:
            block.hash, block.token_ids = block_hash, token_ids
            self.cached_blocks[block_hash] = block_id
        return block_hash

    # ----- allocation -----
    def can_allocate(self, num_blocks: int) -> bool:
        return num_blocks <= len(self.free_blocks)

    def allocate(self, num_blocks: int) -> list[int]:
        """Take num_blocks free blocks, evicting the least recently used cached content."""
        assert self.can_allocate(num_blocks), "caller must check can_allocate first"
        taken = []
        for _ in range(num_blocks):
            block_id, _ = self.free_blocks.popitem(last=False)
            block = self.blocks[block_id]
            if block.hash != NO_HASH:
                del self.cached_blocks[block.hash]
                block.hash, block.token_ids = NO_HASH, ()
            block.ref_count = 1
            taken.append(block_id)
        return taken

    def free(self, block_ids: list[int]) -> None:
        """Drop one reference to each block. Freed in reverse so a sequence's tail is evicted before its head."""
        for block_id in reversed(block_ids):
            block = self.blocks[block_id]
            assert block.ref_count > 0, f"double free of block {block_id}"
            block.ref_count -= 1
            if block.ref_count == 0:
                self.free_blocks[block_id] = None  # most recently used end

    def truncate(self, seq: Sequence, num_tokens: int) -> None:
        """Shrink seq's block table to what num_tokens tokens need (speculation's rollback of rejected drafts).
        The dropped blocks hold no published hash: only computed tokens are hashed, and they fit the kept ones."""
        keep = self.num_blocks_for(num_tokens)
        assert len(seq.block_hashes) <= keep
        self.free(seq.block_table[keep:])
        del seq.block_table[keep:]

    def free_sequence(self, seq: Sequence) -> None:
        """Release seq's blocks (cached content stays findable until the blocks are reused)."""
        self.free(seq.block_table)
        seq.block_table = []
        seq.block_hashes = []
