"""Block allocator and prefix cache: exact block ids, reference counts, LRU eviction order."""
from server.block_manager import BlockManager


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
    tokens = [5, 6, 7, 8, 9]
    blocks = bm.allocate(3)
    parent = -1
    for i in range(2):  # two full blocks computed
        parent = bm.cache_block(blocks[i], parent, tuple(tokens[2 * i:2 * i + 2]))
    hits = bm.match_prefix([5, 6, 7, 8, 1], max_tokens=4)
    assert hits == blocks[:2]
    bm.take_cached(hits)
    assert bm.blocks[blocks[0]].ref_count == 2
    assert bm.match_prefix([5, 6, 1, 1], max_tokens=4) == blocks[:1]  # stops at the first miss
    assert bm.match_prefix([9, 9, 7, 8], max_tokens=4) == []  # chained: same block content, other parent


def test_freed_cached_blocks_are_revived_then_evicted_oldest_first():
    bm = BlockManager(num_blocks=3, block_size=1)
    x, y = bm.allocate(2)
    hx = bm.cache_block(x, -1, (1,))
    bm.cache_block(y, hx, (2,))
    bm.free([x, y])  # still cached, now evictable
    assert bm.match_prefix([1, 2, 3], 3) == [x, y]
    bm.take_cached([x])
    assert bm.blocks[x].ref_count == 1 and x not in bm.free_blocks
    # Allocation now takes the never-used block 2, then evicts y (the only free cached one).
    assert bm.allocate(1) == [2]
    assert bm.allocate(1) == [y] and bm.match_prefix([1, 2], 2) == [x]


def test_prefix_caching_off_never_matches():
    bm = BlockManager(num_blocks=2, block_size=1, enable_prefix_caching=False)
    (b,) = bm.allocate(1)
    bm.cache_block(b, -1, (1,))
    assert bm.match_prefix([1, 2], 2) == []
