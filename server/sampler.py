"""The logits pipeline, in a fixed order, and the choice of the next token.

float32 logits (rows, vocab) -> watermark -> repetition penalty -> frequency / presence penalties -> logit bias ->
grammar mask -> temperature -> top-k -> top-p -> typical-p -> greedy argmax or seeded sampling.
Logprobs and top-n alternatives come from the fully processed distribution. Each sampling request owns a
`torch.Generator`, so its draws do not depend on the rest of the batch. Prompt logprobs (the raw distribution, no
penalties or warpers) are computed here too, so every logprob the engine reports comes from this file.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from server.protocol import draw_seed
from server.sequence import Sequence
from server.verification import accept, draft_rows
from server.watermark import apply_watermark


@dataclass(frozen=True)
class SampledToken:
    """One row's choice: the token, its logprob and the top-n alternatives (best first; empty when not asked for)."""

    token_id: int
    logprob: float
    top_tokens: tuple[tuple[int, float], ...] = ()


class Sampler:
    def __init__(self, device: str, watermark_gamma: float = 0.5, watermark_delta: float = 2.0):
        self.device = device
        self.watermark_gamma = watermark_gamma
        self.watermark_delta = watermark_delta
        self._grammar_masks = None  # grammars.mask.GrammarMasks, made on the first constrained row

    def init_sequence(self, seq: Sequence) -> None:
        """Give a sampling request its own generator (seeded by the request, else randomly)."""
        if seq.params.is_sampling and seq.generator is None:
            seed = seq.params.seed if seq.params.seed is not None else draw_seed()
            seq.generator = torch.Generator(self.device).manual_seed(seed)

    def __call__(self, logits: torch.Tensor, seqs: list[Sequence]) -> list[SampledToken]:
        """logits (R, vocab) float32 of R sequences -> one SampledToken per row."""
        logits = self.process(logits, seqs)
        greedy, log_norm = argmax_logsumexp(logits)  # (R,) each
        chosen = self._choose(logits, seqs, greedy)  # (R,)
        max_n = max(s.params.top_n_tokens for s in seqs)
        top_lp = top_ids = None
        if max_n:  # the chosen token's logprob from the same tensor as its alternatives': equal where both appear
            logprobs = torch.log_softmax(logits, dim=-1)  # (R, vocab)
            chosen_logprobs = logprobs.gather(1, chosen[:, None]).squeeze(1)
            top_lp, top_ids = logprobs.topk(min(max_n, logprobs.shape[-1]), dim=-1)
            top_lp, top_ids = top_lp.tolist(), top_ids.tolist()  # (R, max_n) each
        else:
            chosen_logprobs = logits.gather(1, chosen[:, None]).squeeze(1) - log_norm  # log_softmax at the choice
        rows = zip(chosen.tolist(), chosen_logprobs.tolist())
        return [SampledToken(t, lp, tuple(zip(top_ids[r], top_lp[r]))[: s.params.top_n_tokens] if max_n else ())
                for r, ((t, lp), s) in enumerate(zip(rows, seqs))]

    def verify(self, logits: torch.Tensor, seqs: list[Sequence], drafts: list[list[int]],
               eos_token_ids: tuple[int, ...]) -> list[list[SampledToken]]:
        """Speculation: logits (sum(1 + len(d)), vocab) float32, each sequence's rows after 0 .. k of its drafts
        (server.verification) -> per sequence the tokens it emits: its kept drafts, then the target's token."""
        if not any(drafts):
            return [[t] for t in self(logits, seqs)]
        rows = draft_rows(seqs, drafts, eos_token_ids)
        logits = self.process(logits, rows)
        logprobs = torch.log_softmax(logits, dim=-1)  # (R, vocab)
        chosen = accept(logits, seqs, drafts)  # per sequence (ids, rows)
        flat_rows = [r for _, rs in chosen for r in rs]
        flat_ids = [t for ts, _ in chosen for t in ts]
        index = torch.tensor(flat_rows, device=logits.device)
        chosen_lp = logprobs[index, torch.tensor(flat_ids, device=logits.device)].tolist()
        top = self._top_n(logprobs[index], [seqs[i].params.top_n_tokens for i, (ts, _) in enumerate(chosen)
                                            for _ in ts])
        tokens, i = [], 0
        for ts, _ in chosen:
            tokens.append([SampledToken(t, chosen_lp[i + j], top[i + j]) for j, t in enumerate(ts)])
            i += len(ts)
        return tokens

    @staticmethod
    def _top_n(logprobs: torch.Tensor, top_n: list[int]) -> list[tuple[tuple[int, float], ...]]:
        """logprobs (R, vocab) -> each row's top_n[r] (id, logprob) alternatives, best first."""
        max_n = max(top_n)
        if not max_n:
            return [()] * len(top_n)
        lp, ids = logprobs.topk(min(max_n, logprobs.shape[-1]), dim=-1)
        return [tuple(zip(i, v))[:n] for i, v, n in zip(ids.tolist(), lp.tolist(), top_n)]

    @staticmethod
    def prompt_logprobs(logits: torch.Tensor, targets: list[int]) -> list[float]:
        """Raw logits (n, vocab) at n prompt positions -> logprob of the token that follows each (targets, n ids)."""
        logprobs = torch.log_softmax(logits, dim=-1)
        index = torch.tensor(targets, device=logprobs.device)[:, None]
        return logprobs.gather(1, index).squeeze(1).tolist()

    def process(self, logits: torch.Tensor, seqs: list[Sequence]) -> torch.Tensor:
        """Apply the pipeline up to (not including) the choice. logits (R, vocab) float32, modified in place."""
        rows = lambda pred: [r for r, s in enumerate(seqs) if pred(s.params)]  # noqa: E731
        if wm := rows(lambda p: p.watermark):
            sub = logits[wm]
            apply_watermark(sub, [seqs[r].token_ids[-1] for r in wm], self.watermark_gamma, self.watermark_delta)
            logits[wm] = sub
        if rp := rows(lambda p: p.repetition_penalty != 1.0):
            self._repetition_penalty(logits, seqs, rp)
        if fp := rows(lambda p: p.frequency_penalty != 0.0 or p.presence_penalty != 0.0):
            self._frequency_presence(logits, seqs, fp)
        for r in rows(lambda p: bool(p.logit_bias)):
            ids, biases = zip(*seqs[r].params.logit_bias)
            logits[r, list(ids)] += torch.tensor(biases, device=logits.device)
        if any(s.grammar_state is not None for s in seqs):
            self._masks().apply(logits, [s.grammar_state for s in seqs])
        if sampled := rows(lambda p: p.is_sampling):
            sub = logits[sampled]
            params = [seqs[r].params for r in sampled]
            sub = _warp(sub, params)
            logits[sampled] = sub
        return logits

    def _masks(self):
        if self._grammar_masks is None:
            from grammars.mask import GrammarMasks  # only servers that constrain a request need outlines-core

            self._grammar_masks = GrammarMasks(self.device)
        return self._grammar_masks

    def _repetition_penalty(self, logits: torch.Tensor, seqs: list[Sequence], rows: list[int]) -> None:
        # HF/CTRL rule over prompt + generated tokens, once per distinct id: s/p if s > 0 else s*p.
        row_idx, tok_idx = _flatten([seqs[r].token_ids for r in rows], rows, logits.device)
        present = torch.zeros_like(logits, dtype=torch.bool)
        present[row_idx, tok_idx] = True
        penalty = torch.ones(logits.shape[0], 1, device=logits.device)
        penalty[rows, 0] = torch.tensor([seqs[r].params.repetition_penalty for r in rows], device=logits.device)
        penalized = torch.where(logits > 0, logits / penalty, logits * penalty)
        torch.where(present, penalized, logits, out=logits)

    def _frequency_presence(self, logits: torch.Tensor, seqs: list[Sequence], rows: list[int]) -> None:
        # OpenAI's definitions over the generated tokens: s -= f * count + p * (count > 0).
        row_idx, tok_idx = _flatten([seqs[r].generated_token_ids for r in rows], rows, logits.device)
        counts = torch.zeros_like(logits)
        counts.index_put_((row_idx, tok_idx), torch.ones_like(tok_idx, dtype=logits.dtype), accumulate=True)
        f = torch.zeros(logits.shape[0], 1, device=logits.device)
        p = torch.zeros(logits.shape[0], 1, device=logits.device)
        f[rows, 0] = torch.tensor([seqs[r].params.frequency_penalty for r in rows], device=logits.device)
        p[rows, 0] = torch.tensor([seqs[r].params.presence_penalty for r in rows], device=logits.device)
        logits -= f * counts + p * (counts > 0)

    def _choose(self, logits: torch.Tensor, seqs: list[Sequence], greedy: torch.Tensor) -> torch.Tensor:
        """The greedy choice (R,) with the sampling rows' draws put in (greedy itself when no row samples)."""
        chosen = greedy
        sampled = [r for r, s in enumerate(seqs) if s.params.is_sampling]
        if sampled:
            chosen = greedy.clone()
            probs = torch.softmax(logits[sampled], dim=-1)
            # Exponential race: argmax(p / q), q ~ Exp(1), equals a multinomial draw; one generator per request.
            q = torch.empty_like(probs)
            for i, r in enumerate(sampled):
                q[i].exponential_(generator=seqs[r].generator)
            chosen[sampled] = (probs / q).argmax(dim=-1)
        return chosen


def argmax_logsumexp(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """logits (R, vocab) -> (argmax (R,) int64, first maximum on ties; logsumexp (R,)). The C++ op on CPU float32
    (server/csrc/sampling_ops.cpp: one pass per row, ~10x torch's reductions at vocab 8k) when built, else torch."""
    if logits.device.type == "cpu" and logits.dtype == torch.float32 and _sampling_op_available():
        return torch.ops.rho_serve.argmax_logsumexp(logits if logits.stride(-1) == 1 else logits.contiguous())
    return logits.argmax(dim=-1), torch.logsumexp(logits, dim=-1)


def _sampling_op_available() -> bool:
    from server import cpu_attention  # the extension that holds the op; built (or found missing) once per process

    return cpu_attention.available() and hasattr(torch.ops.rho_serve, "argmax_logsumexp")


def _flatten(token_lists: list[list[int]], rows: list[int], device) -> tuple[torch.Tensor, torch.Tensor]:
    row_idx = [r for r, toks in zip(rows, token_lists) for _ in toks]
    tok_idx = [t for toks in token_lists for t in toks]
    return (torch.tensor(row_idx, dtype=torch.long, device=device),
            torch.tensor(tok_idx, dtype=torch.long, device=device))


def _column(values: list[float], like: torch.Tensor) -> torch.Tensor:
    return torch.tensor(values, dtype=like.dtype, device=like.device)[:, None]


def _warp(logits: torch.Tensor, params: list) -> torch.Tensor:
    """Temperature, top-k, top-p, typical-p for sampling rows. logits (S, vocab) -> (S, vocab)."""
    logits = logits / _column([p.temperature for p in params], logits)
    vocab = logits.shape[-1]
    if any(p.top_k for p in params):
        k = torch.tensor([min(p.top_k, vocab) if p.top_k else vocab for p in params], device=logits.device)
        sorted_desc = logits.sort(dim=-1, descending=True).values
        kth = sorted_desc.gather(1, (k - 1)[:, None])
        logits = logits.masked_fill(logits < kth, float("-inf"))  # ties with the k-th are kept
    if any(p.top_p < 1.0 for p in params):
        logits = _top_p(logits, _column([p.top_p for p in params], logits))
    if any(p.typical_p < 1.0 for p in params):
        logits = _typical_p(logits, _column([p.typical_p for p in params], logits))
    return logits


def _top_p(logits: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    sorted_logits, order = logits.sort(dim=-1)  # ascending
    cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    remove = cumulative <= 1 - top_p
    remove[:, -1] = False  # always keep the most likely token
    return logits.masked_fill(remove.scatter(1, order, remove), float("-inf"))


def _typical_p(logits: torch.Tensor, mass: torch.Tensor) -> torch.Tensor:
    # Meister et al.: keep the tokens whose surprisal is closest to the entropy, up to probability mass `mass`.
    log_p = torch.log_softmax(logits, dim=-1)
    p = log_p.exp()
    entropy = -(log_p * p).nan_to_num().sum(dim=-1, keepdim=True)
    shifted = (-log_p - entropy).abs()
    sorted_shifted, order = shifted.sort(dim=-1)
    cumulative = logits.gather(-1, order).softmax(dim=-1).cumsum(dim=-1)
    last = (cumulative < mass).sum(dim=-1, keepdim=True).clamp(max=logits.shape[-1] - 1)
    remove = sorted_shifted > sorted_shifted.gather(1, last)
    remove[:, 0] = False
    return logits.masked_fill(remove.scatter(1, order, remove), float("-inf"))
