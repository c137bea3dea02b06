"""The engine: one thread that owns the model and every tensor, stepping the batch forward.

Each step: drain the inbox (new requests, aborts) -> schedule -> one forward pass -> sample (with `--speculate`:
verify each sequence's drafts, server/verification.py) -> postprocess (append the emitted tokens in order, advance
grammars, finish on EOS / length, roll back rejected drafts, free blocks) -> hand the step's `TokenEvent`s to the
client in one call. A request whose processing raises fails alone (the step is retried one sequence at a time to
find it); the loop keeps serving the others. A sequence whose logits come out NaN or inf (an overflow at run
time) fails alone too, with a model error, and the engine reports itself unhealthy until a later step's logits are all
finite.
"""
from __future__ import annotations

import itertools
import logging
import math
import queue
import threading
import time
from collections.abc import Callable

import torch

from server.attention import AttentionUnavailableError, attention_backend
from server.block_manager import BlockManager
from server.config import ConfigError, EngineConfig
from server.cpu_threads import StepThreads, default_num_threads
from server.loader import load_checkpoint
from server.model_runner import ModelRunner
from server.protocol import (EngineInfo, EngineRequest, EngineStats, FinishReason, StepInfo, TokenEvent, TopToken,
                             WatermarkDetection)
from server.sampler import SampledToken, Sampler
from server.scheduler import ScheduledChunk, Scheduler
from server.sequence import FINISH_REASONS, Sequence, SequenceStatus
from server.speculation import Speculator
from server.watermark import detect

logger = logging.getLogger(__name__)

CPU_DEFAULT_POOL_TOKENS = 32768
IDLE_WAKE_S = 0.25  # an idle loop's longest sleep
# The sequence's error (router: 424 "Request failed during generation: ...", error_type "generation").
NON_FINITE_MESSAGE = ("the model produced non-finite logits (NaN or inf) for this sequence; the model or its weights "
                      "overflow in this dtype")
EventCallback = Callable[[list[TokenEvent]], None]
StepObserver = Callable[[StepInfo], None]


class Engine:
    def __init__(self, config: EngineConfig):
        self.config = config
        device = config.device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = config.dtype or ("bfloat16" if device.startswith("cuda") else "float32")
        threads = config.num_threads or default_num_threads()
        if device == "cpu":  # the CPUs this process may use, not torch's count of the host's cores
            torch.set_num_threads(threads)
        kv_dtype = config.kv_cache_dtype or dtype
        if kv_dtype != dtype and not device.startswith("cpu"):
            raise ConfigError(f"--kv-cache-dtype {kv_dtype} is a CPU option: on {device} the cache is --dtype's")
        self.checkpoint, model = load_checkpoint(config.model_id, dtype, device)
        attention = config.attention or ("triton" if device.startswith("cuda") else "cpp")
        try:
            backend = attention_backend(attention, device)
        except AttentionUnavailableError as e:
            raise ConfigError(f"--attention {attention} is unavailable here: {e}") from None
        num_blocks = self._num_blocks(model, device, backend)
        self.max_total_tokens = min(config.max_total_tokens or self.checkpoint.max_position_embeddings,
                                    num_blocks * config.block_size)
        self.runner = ModelRunner(model, num_blocks, config.block_size, kv_dtype, device, backend,
                                  attention == "triton", config.cuda_graphs, self.max_total_tokens)
        self.block_manager = BlockManager(num_blocks, config.block_size, config.enable_prefix_caching)
        self.speculator = Speculator(config.speculate, self.max_total_tokens, self.checkpoint.eos_token_ids,
                                     history_ngrams=config.speculate_history) if config.speculate else None
        self.scheduler = Scheduler(self.block_manager, config.max_batch_prefill_tokens, config.max_num_seqs,
                                   self.speculator)
        self.sampler = Sampler(device, config.watermark_gamma, config.watermark_delta)
        cfg = model.cfg
        self.step_threads = StepThreads(
            threads, sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear)),
            2 * cfg.num_layers * cfg.num_heads * cfg.head_dim) if device == "cpu" and threads > 1 else None
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._arrivals = itertools.count()
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._step_started: float | None = None
        self._num_steps = self._num_prefill_tokens = self._num_decode_tokens = 0
        self._num_drafts_proposed = self._num_drafts_accepted = 0
        self._pending: list[TokenEvent] = []  # refusals produced while the loop slept; sent with the next step
        self._step_observers: list[StepObserver] = []
        self._forward_s = 0.0  # of the current step
        # False from a step whose logits held NaN/inf until a later step's are all finite (reported by /health).
        self.logits_finite = True
        logger.info("engine ready: %d KV blocks of %d tokens, attention=%s, max_total_tokens=%d", num_blocks,
                    config.block_size, attention, self.max_total_tokens)

    def _num_blocks(self, model, device: str, attention: tuple) -> int:
        cfg = self.config
        if cfg.max_batch_total_tokens is not None:
            return cfg.max_batch_total_tokens // cfg.block_size
        if device.startswith("cuda"):
            from server.memory import num_kv_blocks_from_memory

            return num_kv_blocks_from_memory(model, cfg, attention)
        tokens = max(CPU_DEFAULT_POOL_TOKENS, cfg.max_total_tokens or 0)
        return -(-tokens // cfg.block_size)

    # ----- thread-safe API -----
    def submit(self, request: EngineRequest) -> None:
        self._inbox.put(("add", request))

    def abort(self, request_id: str) -> None:
        self._inbox.put(("abort", request_id))

    def start(self, on_events: EventCallback) -> None:
        """Run the loop on a thread of its own (a library user's default); no-op when it already runs (`run`)."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._loop, args=(on_events,), name="rho-engine", daemon=True)
        self._thread.start()

    def run(self, on_events: EventCallback) -> None:
        """Run the loop on the calling thread until `shutdown` (rho-serve runs it on the process's main thread).

        Why the main thread: libgomp counts every thread that opens OpenMP parallel regions, and once the count
        exceeds the CPUs (a second thread with its own team, next to the main thread that loaded the model) it
        throttles its workers' spin-wait to almost nothing, so each of a step's ~100 parallel regions waits for a
        worker to wake from sleep: MKL's GEMMs ran 2x slower on a thread of their own (2 CPUs, 2 threads), a whole
        decode step 2.2x. Call `claim_thread` first when other threads may call `start` meanwhile."""
        self.claim_thread()
        self._loop(on_events)

    def claim_thread(self) -> None:
        """Reserve the loop for the calling thread: `start` then starts nothing, `run` must follow on this thread."""
        if self._thread is None:
            self._thread = threading.current_thread()
        assert self._thread is threading.current_thread(), "the engine loop already runs on another thread"

    def shutdown(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        self._inbox.put(("wake", None))
        thread = self._thread
        if thread is not None and thread is not threading.current_thread() and thread is not threading.main_thread():
            thread.join(timeout)  # the main thread is never joined: it is the one that will return from `run`

    def add_step_observer(self, observer: StepObserver) -> None:
        """Call observer(StepInfo) after every step, on the engine thread (keep it cheap and thread-safe)."""
        self._step_observers.append(observer)

    def info(self) -> EngineInfo:
        ckpt = self.checkpoint
        return EngineInfo(ckpt.model_id, str(ckpt.path), ckpt.vocab_size, ckpt.eos_token_ids, self.max_total_tokens,
                          ckpt.device, self.config.speculate)

    def detect_watermark(self, token_ids: list[int]) -> WatermarkDetection:
        """Thread-safe (pure): the detector with this engine's gamma over its vocabulary."""
        cfg = self.config
        return detect(token_ids, self.checkpoint.vocab_size, cfg.watermark_gamma, cfg.watermark_delta)

    def stats(self) -> EngineStats:
        started = self._step_started
        return EngineStats(
            num_waiting=self.scheduler.num_waiting, num_running=self.scheduler.num_running,
            num_blocks_used=self.block_manager.num_used_blocks, num_blocks_total=self.block_manager.num_blocks,
            block_size=self.block_manager.block_size,
            alive=self._thread is None or self._thread.is_alive(),
            seconds_since_last_step=0.0 if started is None else time.monotonic() - started,
            num_steps=self._num_steps, num_prefill_tokens_total=self._num_prefill_tokens,
            num_decode_tokens_total=self._num_decode_tokens,
            num_draft_tokens_proposed_total=self._num_drafts_proposed,
            num_draft_tokens_accepted_total=self._num_drafts_accepted, logits_finite=self.logits_finite)

    # ----- the loop -----
    def _loop(self, on_events: EventCallback) -> None:
        while not self._stopping.is_set():
            if not self.scheduler.has_work():
                try:  # sleep until there is something to do; wake now and then so that, on the main thread,
                    # Python runs the signal handlers (SIGTERM) that arrived meanwhile
                    self._handle(self._inbox.get(timeout=IDLE_WAKE_S))
                except queue.Empty:
                    continue
            try:
                events = self.step()
            except Exception:  # an invariant broke: fail everything in flight, keep the loop alive
                logger.exception("engine step failed; failing all in-flight requests")
                events = self._fail_all("internal engine error")
            if events:
                on_events(events)

    @torch.inference_mode()
    def step(self) -> list[TokenEvent]:
        """Run one scheduling step; returns the events it produced."""
        events, self._pending = self._pending, []
        self._drain_inbox(events)
        out = self.scheduler.schedule()
        if out.is_empty:
            return events
        if self.step_threads is not None:
            keys = sum(c.num_new_tokens * (c.seq.num_computed_tokens + c.num_new_tokens) for c in out.chunks)
            self.step_threads.apply(out.num_tokens, keys)  # keys: an upper bound per chunk
        self._step_started = started = time.monotonic()
        for chunk in out.chunks:
            if chunk.seq.scheduled_at is None:
                chunk.seq.scheduled_at = started
        method = "decode" if all(c.seq.num_computed_tokens >= c.seq.num_prompt_tokens for c in out.chunks) \
            else "prefill"
        num_seqs, num_tokens, ok = len(out.chunks), out.num_tokens, True
        drafts0, accepted0 = self._num_drafts_proposed, self._num_drafts_accepted
        self._forward_s = 0.0
        try:
            self._run(out.chunks, events)
        except Exception as e:
            ok = False
            if len(out.chunks) == 1:
                self._fail(out.chunks[0].seq, e, events)
            else:
                self._run_isolated(out.chunks, events)
        finally:
            self._step_started = None
        self._num_steps += 1
        total = time.monotonic() - started
        info = StepInfo(method, num_seqs, num_tokens, self._forward_s, total - self._forward_s, total, ok,
                        self._num_drafts_proposed - drafts0, self._num_drafts_accepted - accepted0)
        for observer in self._step_observers:
            observer(info)
        return events

    def _run(self, chunks: list[ScheduledChunk], events: list[TokenEvent]) -> None:
        sampling = [c for c in chunks if c.samples]  # before commit moves num_computed_tokens: out.seqs' chunks
        started = time.monotonic()
        out = self.runner.run(chunks)
        self._forward_s += time.monotonic() - started
        for rows, logits in out.prompt_logits:
            rows.seq.record_prompt_logprobs(rows.start, self.sampler.prompt_logprobs(logits, rows.targets))
        seqs, drafts, logits, broken = self._split_non_finite(out) if out.seqs else ([], [], None, [])
        if broken:  # only the finite sequences were sampled
            sampling = [c for c in sampling if not any(c.seq is b for b in broken)]
        sampled = self.sampler.verify(logits, seqs, drafts, self.checkpoint.eos_token_ids) if seqs else []
        for chunk in chunks:
            self.scheduler.commit(chunk)  # drafts are committed by accept_drafts, once appended
            n = chunk.num_new_tokens - len(chunk.drafts)
            if chunk.seq.num_computed_tokens > chunk.seq.num_prompt_tokens and n == 1:
                self._num_decode_tokens += 1
            else:
                self._num_prefill_tokens += n
        for chunk, tokens in zip(sampling, sampled):
            seq, emitted = chunk.seq, 0
            try:
                for token in tokens:  # kept drafts, then the target's token; nothing past EOS or the length
                    self._append(seq, token, events)
                    emitted += 1
                    if seq.is_finished:
                        break
            except Exception as e:
                self._fail(seq, e, events)
            if chunk.drafts:
                self._num_drafts_proposed += len(chunk.drafts)
                self._num_drafts_accepted += min(emitted, len(tokens) - 1)
                self.scheduler.accept_drafts(chunk, len(tokens) - 1)
        for seq in broken:
            self._fail(seq, NON_FINITE_MESSAGE, events)

    def _split_non_finite(self, out):
        """out.logits (sum(1 + len(d)), vocab) -> (seqs, drafts, logits) of the sequences whose rows are all finite,
        and the sequences with a NaN or inf in any of their rows.

        One sum and host sync per step (a finite sum means every entry is finite: NaN and inf propagate, and the
        rare overflow of large finite logits only sends the step to the exact check); the per-row check runs only
        when that fails. Sets `logits_finite` (health).
        """
        if math.isfinite(float(out.logits.sum())) or bool(torch.isfinite(out.logits).all()):
            self.logits_finite = True
            return out.seqs, out.drafts, out.logits, []
        self.logits_finite = False
        finite = torch.isfinite(out.logits).all(dim=-1).tolist()  # (R,) bools
        seqs, drafts, rows, broken, start = [], [], [], [], 0
        for seq, draft in zip(out.seqs, out.drafts):
            end = start + 1 + len(draft)  # a sequence's rows are consecutive: after 0 .. k of its drafts
            if all(finite[start:end]):
                seqs.append(seq)
                drafts.append(draft)
                rows.extend(range(start, end))
            else:
                broken.append(seq)
            start = end
        logger.warning("the model produced non-finite logits for %d of %d sequences; failing them", len(broken),
                       len(out.seqs))
        return seqs, drafts, out.logits[rows], broken

    def _run_isolated(self, chunks: list[ScheduledChunk], events: list[TokenEvent]) -> None:
        """The batch raised: run each chunk alone so only the culprit fails."""
        for chunk in chunks:
            if chunk.seq.is_finished:
                continue
            try:
                self._run([chunk], events)
            except Exception as e:
                self._fail(chunk.seq, e, events)

    # ----- postprocess -----
    def _append(self, seq: Sequence, token: SampledToken, events: list[TokenEvent]) -> None:
        params = seq.params
        stop_ids = params.stop_token_ids or self.checkpoint.eos_token_ids
        token_id = token.token_id
        is_eos = token_id in stop_ids
        seq.append(token_id, is_eos)
        status = None
        if seq.num_generated_tokens >= params.max_new_tokens or seq.num_tokens >= self.max_total_tokens:
            status = SequenceStatus.FINISHED_LENGTH  # length wins over EOS on the last allowed token (TGI)
        elif is_eos and not params.ignore_eos:
            status = SequenceStatus.FINISHED_EOS
        event = TokenEvent(
            request_id=seq.request_id, token_id=token_id, logprob=token.logprob,
            top_tokens=tuple(TopToken(t, lp) for t, lp in token.top_tokens),
            finish_reason=FINISH_REASONS[status] if status else None, num_prompt_tokens=seq.num_prompt_tokens,
            num_cached_prompt_tokens=seq.num_cached_prompt_tokens, is_special=is_eos, scheduled_at=seq.scheduled_at,
            emitted_at=0.0 if seq.first_event_sent else time.monotonic(),
            prompt_logprobs=None if seq.first_event_sent or seq.prompt_logprobs is None else tuple(seq.prompt_logprobs))
        seq.first_event_sent = True
        events.append(event)
        if status is not None:
            self._finish(seq, status)

    def _finish(self, seq: Sequence, status: SequenceStatus) -> None:
        self.scheduler.finish(seq, status)

    def _fail(self, seq: Sequence, error: Exception | str, events: list[TokenEvent]) -> None:
        if not isinstance(error, str):
            logger.warning("request %s failed: %s: %s", seq.request_id, type(error).__name__, error)
            error = f"{type(error).__name__}: {error}"
        self._finish(seq, SequenceStatus.FINISHED_ERROR)
        events.append(TokenEvent(request_id=seq.request_id, error=error, num_prompt_tokens=seq.num_prompt_tokens))

    def _fail_all(self, message: str) -> list[TokenEvent]:
        events: list[TokenEvent] = []
        for seq in list(self.scheduler.sequences.values()):
            self._fail(seq, message, events)
        return events

    # ----- inbox -----
    def _drain_inbox(self, events: list[TokenEvent]) -> None:
        while True:
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                return
            self._handle(item, events)

    def _handle(self, item: tuple, events: list[TokenEvent] | None = None) -> None:
        kind, payload = item
        if kind == "add":
            self._add(payload, events if events is not None else self._pending)
        elif kind == "abort":
            seq = self.scheduler.get(payload)
            if seq is not None:
                self._finish(seq, SequenceStatus.FINISHED_ABORTED)

    def _add(self, request: EngineRequest, events: list[TokenEvent]) -> None:
        seq = Sequence(request, next(self._arrivals))
        if not request.prompt_token_ids:
            events.append(TokenEvent(request.request_id, error="empty prompt"))
            return
        if self.scheduler.get(request.request_id) is not None:
            events.append(TokenEvent(request.request_id, error=f"duplicate request id {request.request_id}"))
            return
        if seq.num_tokens >= self.max_total_tokens or not self.scheduler.can_ever_fit(seq.num_tokens + 1):
            events.append(TokenEvent(request.request_id, error=f"the prompt has {seq.num_tokens} tokens: at most "
                                     f"{self.max_total_tokens - 1} fit in this engine's KV cache "
                                     f"(max_total_tokens={self.max_total_tokens})"))
            return
        self.sampler.init_sequence(seq)
        self.scheduler.add(seq)

    # ----- synchronous use (tests, benchmarks, slm_train evaluation) -----
    @torch.inference_mode()
    def prompt_logits(self, token_ids: list[int]) -> torch.Tensor:
        """float32 logits (len(token_ids), vocab) of one prompt through the paged path (engine must be idle)."""
        assert not self.scheduler.has_work() and self._thread is None, "prompt_logits() needs an idle engine"
        seq = Sequence(EngineRequest("_score", tuple(token_ids)), -1)
        self.block_manager.admit(seq, [], len(token_ids))
        try:
            inputs = self.runner.prepare([ScheduledChunk(seq, len(token_ids))])
            return self.runner.model.compute_logits(self.runner.forward(inputs))
        finally:
            self.block_manager.free_sequence(seq)

    def generate(self, requests: list[EngineRequest]) -> dict[str, list[TokenEvent]]:
        """Run requests to completion on the calling thread (the engine thread must not be running)."""
        assert self._thread is None, "generate() is for an engine without its thread"
        results: dict[str, list[TokenEvent]] = {r.request_id: [] for r in requests}
        for request in requests:
            self.submit(request)
        pending = set(results)
        while pending:
            events = self.step()
            for event in events:
                results[event.request_id].append(event)
                if event.finish_reason is not None or event.error is not None:
                    pending.discard(event.request_id)
        return results


def build_engine(config: EngineConfig) -> Engine:
    if config.max_total_tokens is not None and config.max_batch_total_tokens is not None \
            and config.max_total_tokens > config.max_batch_total_tokens:
        raise ConfigError("`max_total_tokens` must be <= `max_batch_total_tokens`")
    return Engine(config)


__all__ = ["Engine", "EngineConfig", "FinishReason", "build_engine"]
