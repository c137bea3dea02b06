"""Block allocator and prefix cache: exact block ids, reference counts, LRU eviction order."""
from server.block_manager import BlockManager
from server.protocol import EngineRequest
from server.sequence import Sequence


def computed(bm: BlockManager, tokens: list[int], hits: list[int] | None = None) -> Sequence:
    """A sequence admitted with all its tokens, computed and its full blocks published."""
    seq = Sequence(EngineRequest("s", tuple(tokens)), 0)
    bm.admit(seq, hits or [], len(tokens))
    seq.num_computed_tokens = len(tokens)
    bm.hash_full_blocks(seq)
    return seq


def test_allocate_and_free_in_lru_order():
    bm = BlockManager(num_blocks=4, block_size=2)
    a = bm.allocate(2)
    b = bm.allocate(2)
    assert a == [0, 1] and b == [2, 3] and not bm.can_allocate(1)
    bm.free(a)  # freed in reverse: the tail (1) becomes older than the head (0)
    assert list(bm.free_blocks) == [1, 0]
    assert bm.allocate(1) == [1]


def test_prefix_match_shares_blocks_and_counts_references():
    bm = BlockManager(num_blocks=8, block_size=2)
    first = computed(bm, [5, 6, 7, 8, 9])  # two full blocks published, the third partial
    hits = bm.match_prefix([5, 6, 7, 8, 1], max_tokens=4)
    assert hits == first.block_table[:2] and len(first.block_hashes) == 2
    second = computed(bm, [5, 6, 7, 8, 1], hits)
    assert bm.ref_count(hits[0]) == 2 and second.block_table[:2] == hits
    assert bm.match_prefix([5, 6, 1, 1], max_tokens=4) == hits[:1]  # stops at the first miss
    assert bm.match_prefix([9, 9, 7, 8], max_tokens=4) == []  # chained: same block content, other parent


def test_freed_cached_blocks_are_revived_then_evicted_oldest_first():
    bm = BlockManager(num_blocks=3, block_size=1)
    seq = computed(bm, [1, 2])
    x, y = seq.block_table
    bm.free_sequence(seq)  # still cached, now evictable
    assert seq.block_table == [] and bm.match_prefix([1, 2, 3], 3) == [x, y]
    assert bm.can_admit([x], 3) and not bm.can_admit([x], 4)  # reviving x takes it off the free list
    revived = computed(bm, [1], [x])
    assert bm.ref_count(x) == 1 and x not in bm.free_blocks and revived.block_table == [x]
    # Allocation now takes the never-used block 2, then evicts y (the only free cached one).
    assert bm.allocate(1) == [2]
    assert bm.allocate(1) == [y] and bm.match_prefix([1, 2], 2) == [x]


def test_prefix_caching_off_never_matches():
    bm = BlockManager(num_blocks=2, block_size=1, enable_prefix_caching=False)
    computed(bm, [1])
    assert bm.match_prefix([1, 2], 2) == []
