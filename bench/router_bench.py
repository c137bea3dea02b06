"""`rho-bench router`: the router's CPU per generated token, without HTTP or a model.

`Infer.generate` (detokenization, stop matching, token items, request metrics) for N concurrent non-streaming
requests of T tokens each, fed by a stand-in for the engine client that hands every request one event per "step", as
the engine thread does, through the real client's per-request inbox. Rows: live (woken per token, as streams and
requests with stop strings are) vs not live (woken at the end), each with tokenizers' Rust DecodeStream and with the
Python window decodes. Best of `--rounds`; one thread, so the figure is the router's own cost.

    rho-bench router [--requests 32] [--tokens 64] [--rounds 5] [--model-id DIR]
"""
from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TEXT = "3 * 4 = 12. 12 + 5 = 17. The answer is 17. "


class SteppedClient:
    """generate() like server.client.EngineClient's; `run` plays the engine: one event per request per step."""

    def __init__(self, token_ids: list[int]):
        self.token_ids, self.inboxes = token_ids, {}

    async def generate(self, request, live: bool = True):
        from server.client import _Inbox

        inbox = self.inboxes[request.request_id] = _Inbox(live)
        try:
            while True:
                for event in await inbox.take():
                    yield event
                    if event.finish_reason is not None:
                        return
        finally:
            self.inboxes.pop(request.request_id, None)

    async def run(self, num_requests: int, num_tokens: int) -> None:
        from server.protocol import FinishReason, TokenEvent

        while len(self.inboxes) < num_requests:
            await asyncio.sleep(0)
        for step in range(num_tokens):
            last = FinishReason.LENGTH if step == num_tokens - 1 else None
            token = self.token_ids[step % len(self.token_ids)]
            for rid, inbox in list(self.inboxes.items()):
                inbox.put(TokenEvent(rid, token, -0.5, finish_reason=last, num_prompt_tokens=100))
            await asyncio.sleep(0)


def measure(tokenizer, live: bool, rust: bool, args) -> float:
    """Best seconds per token over the rounds."""
    from router import infer as infer_module
    from router.infer import Infer
    from router.validation import ValidRequest
    from server.protocol import SamplingParams

    ids = tokenizer(TEXT * 6, add_special_tokens=False)["input_ids"]
    client = SteppedClient(ids)
    infer = Infer(client, tokenizer, 10_000)
    # live requests are those with a stop string (that never matches here); rust=False: the Python windows
    valid = ValidRequest("x", tuple(ids[:100]), SamplingParams(max_new_tokens=args.tokens),
                         stop=("never matches",) if live else (), details=True, max_new_tokens=args.tokens)
    decoder_class = infer_module.IncrementalDetokenizer

    class PythonWindows(decoder_class):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            self._stream = None

    infer_module.IncrementalDetokenizer = decoder_class if rust else PythonWindows
    try:
        best = float("inf")
        for _ in range(args.rounds):
            async def one_round():
                await asyncio.gather(client.run(args.requests, args.tokens),
                                     *(infer.generate(valid) for _ in range(args.requests)))
            t = time.perf_counter()
            asyncio.run(one_round())
            best = min(best, time.perf_counter() - t)
    finally:
        infer_module.IncrementalDetokenizer = decoder_class
    return best / (args.requests * args.tokens)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="rho-bench router", description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=32)
    p.add_argument("--tokens", type=int, default=64)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--model-id", type=Path, default=REPO / "models" / "rho-math-tiny", help="its tokenizer is used")
    args = p.parse_args(argv)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(args.model_id))
    print(f"\n{args.requests} requests x {args.tokens} tokens, best of {args.rounds} rounds")
    print("| wake-ups | detokenizer | router us per token |")
    print("|---|---|---|")
    for live in (True, False):
        for rust in (True, False):
            us = 1e6 * measure(tokenizer, live, rust, args)
            print(f"| {'per token (live)' if live else 'at the end'} | "
                  f"{'Rust DecodeStream' if rust else 'Python windows'} | {us:.1f} |")


if __name__ == "__main__":
    main()
