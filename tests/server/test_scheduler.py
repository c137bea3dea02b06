"""The scheduler on its own: token budget, chunked prefill, FIFO admission, newest-first preemption."""
from server.block_manager import BlockManager
from server.protocol import EngineRequest, SamplingParams
from server.scheduler import Scheduler
from server.sequence import Sequence, SequenceStatus


def make(n_prompt: int, i: int) -> Sequence:
    return Sequence(EngineRequest(f"s{i}", tuple(range(1, n_prompt + 1)), SamplingParams(max_new_tokens=8)), i)


def run_step(sched: Scheduler, out) -> None:
    """Pretend the forward pass ran: commit chunks, append a token to sampling sequences."""
    for chunk in out.chunks:
        samples = chunk.samples
        sched.commit(chunk)
        if samples:
            chunk.seq.token_ids.append(99)


def test_long_prompt_is_chunked_under_the_budget():
    sched = Scheduler(BlockManager(64, 4), max_batch_prefill_tokens=10, max_num_seqs=8)
    sched.add(make(25, 0))
    sizes = []
    for _ in range(3):
        out = sched.schedule()
        sizes.append([c.num_new_tokens for c in out.chunks])
        run_step(sched, out)
    assert sizes == [[10], [10], [5]]


def test_decodes_go_first_and_new_requests_join_the_running_batch():
    sched = Scheduler(BlockManager(64, 4), max_batch_prefill_tokens=8, max_num_seqs=8)
    sched.add(make(3, 0))
    run_step(sched, sched.schedule())
    sched.add(make(20, 1))
    out = sched.schedule()
    assert [(c.seq.request_id, c.num_new_tokens) for c in out.chunks] == [("s0", 1), ("s1", 7)]


def test_fifo_head_waits_for_blocks():
    sched = Scheduler(BlockManager(4, 4), max_batch_prefill_tokens=100, max_num_seqs=8)
    sched.add(make(12, 0))  # 3 blocks
    sched.add(make(8, 1))  # 2 blocks: does not fit beside s0
    sched.add(make(2, 2))  # would fit, but must not overtake s1
    out = sched.schedule()
    assert [c.seq.request_id for c in out.chunks] == ["s0"]


def test_newest_running_sequence_is_preempted_and_requeued_first():
    sched = Scheduler(BlockManager(4, 2), max_batch_prefill_tokens=100, max_num_seqs=8)
    a, b = make(3, 0), make(3, 1)
    sched.add(a)
    sched.add(b)
    run_step(sched, sched.schedule())  # prefill: 3 tokens computed in 2 blocks each, a 4th sampled
    run_step(sched, sched.schedule())  # decode the 4th: still 2 blocks each; a 5th sampled
    run_step(sched, sched.schedule())  # the 5th needs a third block each: only one is free, b is preempted
    assert b.status == SequenceStatus.WAITING and sched.waiting[0] is b
    assert b.num_computed_tokens == 0 and b.block_table == [] and b.num_tokens == 5
    assert a.status == SequenceStatus.RUNNING


def test_finish_frees_everything():
    bm = BlockManager(8, 4)
    sched = Scheduler(bm, max_batch_prefill_tokens=100, max_num_seqs=8)
    s = make(9, 0)
    sched.add(s)
    run_step(sched, sched.schedule())
    sched.finish(s, SequenceStatus.FINISHED_ABORTED)
    assert bm.num_used_blocks == 0 and not sched.has_work()
