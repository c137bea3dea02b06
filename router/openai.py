"""OpenAI-compatible routes: POST /v1/chat/completions and POST /v1/completions.

Each request becomes one or more runs of the TGI machinery (router.validation, router.infer): a chat request is
templated (router.chat_template), its tools or response_format become a grammar (router.tools), and each of the `n`
choices is one engine sequence. Decisions (DESIGN.md "Compatibility decisions"; OpenAI wins where TGI breaks clients):
- Sampling: temperature 0 is greedy (top_p ignored then); otherwise OpenAI's default temperature 1 samples.
  n choices run concurrently as independent sequences; with a seed, choice i uses seed + i, so a seeded request is
  reproducible choice by choice. top_logprobs may be up to 20 (TGI's /generate cap of 5 does not apply here).
- Stop strings are cut from the text (OpenAI) and match inside tokens. finish_reason: `stop` (EOS or a stop string),
  `length`, `tool_calls` (a completed tool call).
- usage: prompt_tokens = tokens of the templated prompt (once per distinct prompt, not per choice);
  completion_tokens = every token the engine generated for every choice, the EOS token included (it was generated;
  vLLM and TGI count it too). Chat logprobs list exactly these tokens, so len(logprobs.content) per choice equals
  that choice's share of completion_tokens. Token strings in logprobs are each token's own text (leading space kept).
- Errors: `{"error": {"message", "type", "param", "code"}, "error_type"}` (the openai SDK reads the first,
  huggingface_hub the second) with TGI's statuses and messages. Errors found before streaming starts (body, template,
  tools, validation, 429) are HTTP errors; later ones are one event of that shape (plus `http_status_code`), then
  `data: [DONE]`. A stream validates under one concurrency permit and generates under a second one taken when the
  response starts (a permit cannot be handed to the response safely); an overload in between is an error event.
- /v1/completions: prompt = string, list of strings, token ids, or lists of token ids (at most
  --max-client-batch-size prompts); choice index = prompt index * n + choice; `echo` prepends the prompt (and, with
  `logprobs`, its token logprobs, the first null); `suffix` is refused (TGI's message).
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from fastapi import Depends, FastAPI, Request
from starlette.responses import JSONResponse, Response

from router.accounting import counted
from router.chat_template import ChatTemplate, TemplateError, load_chat_template
from router.errors import RouterError
from router.http import read_json, retry_after, to_model
from router.infer import Generation, TokenInfo, fan_out, gather_or_cancel
from router.openai_schemas import (ChatCompletionRequest, ChatMessage, CompletionRequest, chat_logprob,
                                   completion_logprobs, usage)
from router.openai_stream import chat_events, completion_events, completion_finish, error_body, openai_stream
from router.schemas import GenerateParameters, GrammarParam
from router.state import VERSION, RouterState
from router.streaming import sse_response
from router.timing import Timing, generation_headers, stream_headers, summed_headers
from router.tools import ToolCallStream, ToolError, finish_reason, request_grammar, tool_prompt_suffix, \
    tools_for_template
from router.validation import ValidRequest

SYSTEM_FINGERPRINT = f"{VERSION}-native"


@dataclass
class OpenAIRoutes:
    """Per-app state of the OpenAI routes: the chat template (or why there is none)."""

    state: RouterState
    template: ChatTemplate | None
    template_error: str | None


def register(app: FastAPI, state: RouterState) -> None:
    """Called by router.app.create_app: adds both routes (behind the API key, like TGI) and loads the template."""
    template, error = None, None
    try:
        template = load_chat_template(Path(state.client.info.model_path), state.tokenizer, state.config.chat_template)
    except TemplateError as e:  # the server still serves everything else; chat requests get this error
        error = str(e)
    app.state.openai = OpenAIRoutes(state, template, error)
    auth = [Depends(state.require_auth)]

    @app.post("/v1/chat/completions", dependencies=auth, tags=["OpenAI"], summary="OpenAI chat completions")
    async def chat(request: Request) -> Response:
        return await _guard(state, lambda: _with_body(_chat, state, request))

    @app.post("/v1/completions", dependencies=auth, tags=["OpenAI"], summary="OpenAI (legacy) completions")
    async def completions(request: Request) -> Response:
        return await _guard(state, lambda: _with_body(_completions, state, request))


async def chat_endpoint(state: RouterState, body: dict, request: Request) -> Response:
    """A chat body already decoded (router.app sends `messages` bodies of /invocations here)."""
    return await _guard(state, lambda: _chat(state, body, request))


async def completions_endpoint(state: RouterState, body: dict, request: Request) -> Response:
    """A completions body already decoded (router.app sends `prompt` bodies of /invocations here)."""
    return await _guard(state, lambda: _completions(state, body, request))


async def _with_body(endpoint, state: RouterState, request: Request) -> Response:
    return await endpoint(state, await read_json(request), request)


# ---- errors ------------------------------------------------------------------------------------------------------

def error_response(e: RouterError) -> JSONResponse:
    return JSONResponse(error_body(e), status_code=e.status, headers=retry_after(e))


def as_router_error(e: Exception) -> RouterError:
    if isinstance(e, RouterError):
        return e
    if isinstance(e, TemplateError):
        return RouterError(f"Template error: {e}", 422, "template_error")
    if isinstance(e, ToolError):
        return RouterError(f"Tool error: {e}", 422, "tool_error")
    raise e


async def _guard(state: RouterState, run: Callable) -> Response:
    """Errors -> OpenAI error bodies. The routes count a request once its body parsed (`_counted`); a body that
    does not parse counts nothing (TGI: its extractor refuses it before the handler counts the request)."""
    try:
        return await run()
    except RouterError as e:
        return error_response(e)


@contextlib.contextmanager
def _counted(state: RouterState) -> Iterator:
    """router.accounting.counted, template and tool errors first made RouterErrors (so they count as failures)."""
    with counted(state.metrics) as outcome:
        try:
            yield outcome
        except (TemplateError, ToolError) as e:
            raise as_router_error(e) from None


# ---- building runs -------------------------------------------------------------------------------------------------

def sampling_parameters(req: ChatCompletionRequest | CompletionRequest, max_new_tokens: int | None,
                        grammar: dict | None) -> GenerateParameters:
    greedy = req.temperature == 0
    return GenerateParameters(
        do_sample=not greedy, temperature=None if greedy else req.temperature, top_p=None if greedy else req.top_p,
        seed=req.seed, stop=req.stop_list, max_new_tokens=max_new_tokens, details=True,
        frequency_penalty=req.frequency_penalty, presence_penalty=req.presence_penalty,
        repetition_penalty=req.repetition_penalty,
        logit_bias=[(int(k), v) for k, v in (req.logit_bias or {}).items()] or None,
        grammar=GrammarParam(**grammar) if grammar else None)


def choice_runs(valid: ValidRequest, n: int, seed: int | None, top_n: int, prompt_logprobs: bool = False
                ) -> list[ValidRequest]:
    """n independent runs of one validated request: seeds seed, seed+1, ... (fresh random seeds without one)."""
    valid = dataclasses.replace(valid, params=dataclasses.replace(valid.params, top_n_tokens=top_n,
                                                                  prompt_logprobs=prompt_logprobs))
    return fan_out(valid, n, seed)


def _message_text(message: ChatMessage) -> str | None:
    if isinstance(message.content, list):
        return "".join(part.text or "" for part in message.content)
    return message.content


def _arguments(value: str | dict | None):
    # HF templates render `arguments` as an object (`| tojson`); OpenAI clients send a JSON string.
    if isinstance(value, str):
        with contextlib.suppress(json.JSONDecodeError):
            parsed = json.loads(value)
            return parsed if isinstance(parsed, dict) else value
    return value if value is not None else {}


def template_messages(messages: list[ChatMessage]) -> list[dict]:
    """Wire messages -> what chat templates read: text content, tool calls with object arguments, tool_call_id."""
    out = []
    for m in messages:
        item: dict = {"role": "system" if m.role == "developer" else m.role, "content": _message_text(m)}
        if item["content"] is None and not m.tool_calls:
            item["content"] = ""
        if m.name is not None:
            item["name"] = m.name
        if m.tool_calls:
            item["tool_calls"] = [{"id": c.id, "type": "function", "function": {
                "name": c.function.name, "arguments": _arguments(c.function.arguments)}} for c in m.tool_calls]
        if m.tool_call_id is not None:
            item["tool_call_id"] = m.tool_call_id
        out.append(item)
    return out


def chat_prompt(routes: OpenAIRoutes, req: ChatCompletionRequest, tools, mode: str) -> str:
    if routes.template is None:
        raise TemplateError(routes.template_error or "template not found")
    messages = template_messages(req.messages)
    if mode != "text":
        suffix = tool_prompt_suffix(tools, req.tool_prompt, routes.template.handles_tools)
        if suffix:
            messages[-1] = {**messages[-1], "content": (messages[-1].get("content") or "") + suffix}
    return routes.template.render(messages, tools=tools_for_template(tools) if mode != "text" else None)


def chat_as_generate(routes: OpenAIRoutes, req: ChatCompletionRequest) -> tuple[str, GenerateParameters]:
    """A chat request as TGI's generate request (its `try_into_generate`): the templated prompt and the parameters,
    tools and response_format as a grammar. Raises TemplateError / ToolError (see `as_router_error`)."""
    grammar, tools, mode = request_grammar(req)
    return chat_prompt(routes, req, tools, mode), sampling_parameters(req, req.max_new_tokens, grammar)


# ---- chat --------------------------------------------------------------------------------------------------------

async def _chat(state: RouterState, body: dict, request: Request) -> Response:
    start = time.monotonic()
    req = to_model(body, ChatCompletionRequest)
    with _counted(state) as outcome:
        return await _run_chat(request.app.state.openai, req, start, outcome)


async def _run_chat(routes: OpenAIRoutes, req: ChatCompletionRequest, start: float, outcome) -> Response:
    state = routes.state
    grammar, tools, mode = request_grammar(req)
    prompt = await asyncio.to_thread(chat_prompt, routes, req, tools, mode)  # Jinja rendering: not on the loop
    params = sampling_parameters(req, req.max_new_tokens, grammar)
    top_n = (req.top_logprobs or 0) if req.logprobs else 0
    meta = _meta("chatcmpl", state)
    async with state.infer.slot(req.n) as permits:  # one per choice, before the response; a stream keeps them
        valid = await state.validator.validate(prompt, params, stream=req.stream, add_special_tokens=False,
                                               received_at=start)
        runs = choice_runs(valid, req.n, req.seed, top_n)
        if req.stream:
            events = chat_events(state.infer.texts, state.infer, req, runs, mode, meta, permits.hand_over())
            return sse_response(openai_stream(events, outcome.streamed()), state.config.keep_alive_s,
                                stream_headers(state.compute_type, len(prompt)))
        gens = await gather_or_cancel(state.infer.generate(run, cut_stop=True) for run in runs)
    choices = [_chat_choice(state, req, i, gen, mode) for i, gen in enumerate(gens)]
    num_generated = sum(g.num_generated_tokens for g in gens)
    # TGI's /generate headers for the templated prompt; n choices count as one generation of all their tokens.
    headers = generation_headers(state.compute_type, len(prompt), Timing.span([g.timing for g in gens]),
                                 time.monotonic() - start, len(valid.prompt_token_ids), num_generated)
    return JSONResponse({**meta, "object": "chat.completion", "choices": choices,
                         "usage": usage(len(valid.prompt_token_ids), num_generated)}, headers=headers)


def _chat_choice(state: RouterState, req: ChatCompletionRequest, index: int, gen: Generation, mode: str) -> dict:
    parser = ToolCallStream(mode)
    deltas = parser.feed(gen.generated_text) + parser.finish()
    content = "".join(d.get("content", "") for d in deltas)
    message: dict = {"role": "assistant", "content": content if not parser.is_call else None}
    if parser.is_call:
        message["tool_calls"] = [{"id": parser.call_id, "type": "function",
                                  "function": {"name": parser.name, "arguments": parser.arguments}}]
    logprobs = None
    if req.logprobs:
        texts = state.infer.texts
        logprobs = {"content": [chat_logprob(texts, t, tops) for t, tops in zip(gen.tokens, gen.top_tokens)]}
    return {"index": index, "message": message, "logprobs": logprobs,
            "finish_reason": finish_reason(parser, gen.finish_reason.value)}


# ---- completions -------------------------------------------------------------------------------------------------

async def _completions(state: RouterState, body: dict, request: Request) -> Response:
    start = time.monotonic()
    req = to_model(body, CompletionRequest)
    with _counted(state) as outcome:
        return await _run_completions(state, req, start, outcome)


async def _run_completions(state: RouterState, req: CompletionRequest, start: float, outcome) -> Response:
    _check_completion(state, req)
    params = sampling_parameters(req, req.max_tokens, None)
    top_n = req.logprobs or 0
    meta = _meta("cmpl", state)
    async with state.infer.slot(len(req.prompts) * req.n) as permits:  # one per engine sequence
        valids = [await state.validator.validate(p, params, stream=req.stream, received_at=start)
                  for p in req.prompts]
        echo_logprobs = req.echo and req.logprobs is not None
        runs = [run for v in valids for run in choice_runs(v, req.n, req.seed, top_n, echo_logprobs)]
        if req.stream:
            characters = sum(len(v.inputs) for v in valids)
            events = completion_events(state.infer.texts, state.infer, req, valids, runs, meta, permits.hand_over())
            return sse_response(openai_stream(events, outcome.streamed()), state.config.keep_alive_s,
                                stream_headers(state.compute_type, characters))
        gens = await gather_or_cancel(state.infer.generate(run, cut_stop=True) for run in runs)
    choices = [_completion_choice(state, req, i, valids[i // req.n], gen) for i, gen in enumerate(gens)]
    num_prompt = sum(len(v.prompt_token_ids) for v in valids)
    headers = summed_headers([generation_headers(state.compute_type, len(run.inputs), gen.timing, gen.timing.total_s,
                                                 gen.num_prompt_tokens, gen.num_generated_tokens)
                              for run, gen in zip(runs, gens)])  # TGI sums each prompt's headers
    return JSONResponse({**meta, "object": "text_completion", "choices": choices,
                         "usage": usage(num_prompt, sum(g.num_generated_tokens for g in gens))}, headers=headers)


def _check_completion(state: RouterState, req: CompletionRequest) -> None:
    if req.suffix is not None:
        raise RouterError("Suffix is not supported and can be achieved by preprocessing the prompt.", 422,
                          "suffix not supported")
    if len(req.prompts) > state.config.max_client_batch_size:
        raise RouterError("Number of prompts exceeds the maximum allowed batch size of "
                          f"{state.config.max_client_batch_size}", 422, "batch size exceeded")
    if req.best_of is not None and req.best_of != req.n:
        raise RouterError("Input validation error: `best_of` is not supported here; ask for `n` choices", 422,
                          "validation")


def _completion_choice(state: RouterState, req: CompletionRequest, index: int, valid: ValidRequest,
                       gen: Generation) -> dict:
    prefix = valid.inputs if req.echo else ""
    logprobs = None
    if req.logprobs is not None:
        prompt = gen.prefill if req.echo else []
        logprobs = completion_logprobs(state.infer.texts, prompt, prefix, gen.tokens, gen.top_tokens,
                                       [t.text for t in gen.tokens])
    return {"index": index, "text": prefix + gen.generated_text, "logprobs": logprobs,
            "finish_reason": completion_finish(gen.finish_reason)}


# ---- shared ------------------------------------------------------------------------------------------------------

def _meta(prefix: str, state: RouterState) -> dict:
    return {"id": f"{prefix}-{uuid.uuid4().hex}", "created": int(time.time()), "model": state.model_id,
            "system_fingerprint": SYSTEM_FINGERPRINT}


__all__ = ["register", "chat_endpoint", "completions_endpoint", "TokenInfo"]
