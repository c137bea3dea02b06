"""create_app(client, config): the TGI routes on one FastAPI app (OpenAI routes are registered by router.openai).

The engine is reached only through `client` (server.client.EngineClient); nothing here touches tensors.

Every route body is parsed by router.http (TGI error bodies), generation goes through state.validator and
state.infer, and responses are shaped by router.streaming.
"""
from __future__ import annotations

import asyncio
import contextlib
import time

from fastapi import Depends, FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from starlette.responses import JSONResponse, Response

from router import chat_tokenize, schemas, vertex
from router import openai as openai_routes
from router.accounting import Outcome, counted, uncounted_errors
from router.chat_tokenize import simple_tokens
from router.config import RouterConfig
from router.errors import RouterError, ValidationError
from router.http import PayloadLimit, install_error_handlers, parse_body, read_json, to_model
from router.overload import OverloadGate
from router.state import RouterState, build_state
from router.streaming import generate_response, sse_response, stream_ending, tgi_error_event, tgi_events
from router.timing import generation_headers, stream_headers
from router.validation import check_stream

_ERRORS = {422: {"model": schemas.ErrorResponse}, 424: {"model": schemas.ErrorResponse},
           429: {"model": schemas.ErrorResponse}}


# An SSE event: a token, or the one in-band error that ends a stream. OpenAI routes' chunks are not modelled here.
_STREAM_EVENT = {"oneOf": [{"$ref": "#/components/schemas/StreamResponse"},
                           {"$ref": "#/components/schemas/ErrorResponse"}]}
# /invocations answers as the route it dispatched to: TGI's compat list, or an OpenAI chat / completion object.
_SCORING_RESPONSE = {"oneOf": [{"type": "array", "items": {"$ref": "#/components/schemas/GenerateResponse"}},
                               {"type": "object", "required": ["object", "choices"]}]}


async def run_generate(state: RouterState, req: schemas.GenerateRequest, *, as_list: bool = False) -> Response:
    """Non-streaming generation with TGI's timing headers (router.timing)."""
    start = time.monotonic()
    best_of = req.parameters.best_of or 1  # one permit per sequence; a best_of out of range fails validation below
    with counted(state.metrics):
        async with state.infer.slot(best_of if best_of <= state.limits.max_best_of else 1):
            valid = await state.validator.validate(req.inputs, req.parameters, received_at=start)
            gen = await state.infer.generate(valid)
    body = generate_response(gen, valid)
    headers = generation_headers(state.compute_type, len(req.inputs), gen.timing, time.monotonic() - start,
                                 gen.num_prompt_tokens, gen.num_generated_tokens)
    return JSONResponse([body] if as_list else body, headers=headers)


def run_stream(state: RouterState, req: schemas.GenerateRequest) -> Response:
    """SSE generation: always HTTP 200; every error (429 included) is one in-band event (TGI)."""
    start = time.monotonic()
    outcome = Outcome(state.metrics).streamed()

    async def events():  # every error, before the first token or after, ends in stream_ending
        check_stream(req.parameters)
        async with state.infer.slot():
            valid = await state.validator.validate(req.inputs, req.parameters, stream=True, received_at=start)
            async for event in tgi_events(state.infer.stream(valid), valid):
                yield event

    headers = stream_headers(state.compute_type, len(req.inputs))
    return sse_response(stream_ending(events(), outcome, tgi_error_event), state.config.keep_alive_s, headers,
                        state.config.graceful_termination_timeout)


def _count_failure(state: RouterState):
    """The error handlers' failure count (router.accounting: drops before the response, uncounted routes)."""
    return uncounted_errors(state.metrics)


async def dispatch(state: RouterState, request: Request) -> Response:
    """SageMaker-style dispatch (/invocations, the scoring route).

    `inputs` -> TGI compat route; `messages` -> OpenAI chat; `prompt` -> OpenAI completions.
    """
    body = await read_json(request)
    if isinstance(body, dict) and "inputs" not in body and ("messages" in body or "prompt" in body):
        return await _openai_dispatch(state, body, request)
    req = to_model(body, schemas.CompatGenerateRequest)
    return await compat(state, req)


async def _openai_dispatch(state: RouterState, body: dict, request: Request) -> Response:
    if "messages" in body:
        return await openai_routes.chat_endpoint(state, body, request)
    return await openai_routes.completions_endpoint(state, body, request)


async def compat(state: RouterState, req: schemas.CompatGenerateRequest) -> Response:
    if req.parameters.return_full_text is None:  # TGI: local models have no pipeline tag -> full text
        req.parameters.return_full_text = True
    if req.stream:
        return run_stream(state, req)
    return await run_generate(state, req, as_list=True)


MAX_TOKENIZE_CHARS = 200_000  # /tokenize answers ~10 tokens of JSON per 4 characters: bound the work and the reply


def _tokenize(state: RouterState, text: str) -> list[dict]:
    if len(text) > MAX_TOKENIZE_CHARS:
        raise ValidationError(f"`inputs` has {len(text)} characters; /tokenize takes at most {MAX_TOKENIZE_CHARS}")
    return simple_tokens(state.tokenizer, text, add_special_tokens=True)


def _watermark(state: RouterState, text: str) -> dict:
    ids = state.tokenizer(text, add_special_tokens=False)["input_ids"]
    result = state.client.detect_watermark(ids)  # the engine's detector and gamma: same green lists as generation
    return {"z_score": result.z_score, "p_value": result.p_value, "green_fraction": result.green_fraction,
            "num_tokens_scored": result.num_tokens_scored, "gamma": result.gamma, "delta": result.delta,
            "watermarked": result.z_score > 4.0}


def _register_open(app: FastAPI, state: RouterState) -> None:
    async def health() -> Response:
        problem = state.health_problem()
        if problem is None:
            return Response(status_code=200)
        # TGI's body exactly; the reason (e.g. NaN logits, a wedged engine) goes in a header for operators.
        return JSONResponse({"error": "unhealthy", "error_type": "healthcheck"}, status_code=503,
                            headers={"x-unhealthy-reason": problem})

    for path in ("/health", "/ping", "/"):
        app.add_api_route(path, health, methods=["GET"], tags=["TGI"], summary="Health check (503 when wedged)",
                          responses={503: {"model": schemas.ErrorResponse}})

    @app.get("/info", response_model=schemas.Info, tags=["TGI"], summary="Model and server limits")
    async def info() -> dict:
        return state.info()

    @app.get("/v1/models", tags=["TGI"], summary="The served model", response_model=schemas.ModelList)
    async def models() -> dict:
        # OpenAI's list (what TGI serves and the OpenAI SDK reads) whose top level is also TGI's documented ModelInfo.
        model = {"id": state.model_id, "object": "model", "created": 0, "owned_by": state.model_id}
        return {**model, "object": "list", "data": [model]}

    @app.get("/metrics", tags=["TGI"], summary="Prometheus metrics")
    async def metrics() -> Response:
        state.metrics.refresh(state.client.stats(), state.infer.num_in_flight)
        return Response(state.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")


def _register_protected(app: FastAPI, state: RouterState) -> None:
    auth = [Depends(state.require_auth)]
    body = lambda model: {"requestBody": {"required": True, "content": {"application/json": {  # noqa: E731
        "schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}}}

    @app.post("/generate", dependencies=auth, tags=["TGI"], openapi_extra=body(schemas.GenerateRequest),
              responses={200: {"model": schemas.GenerateResponse}, **_ERRORS}, summary="Generate tokens")
    async def generate(request: Request) -> Response:
        return await run_generate(state, await parse_body(request, schemas.GenerateRequest))

    @app.post("/generate_stream", dependencies=auth, tags=["TGI"], openapi_extra=body(schemas.GenerateRequest),
              responses={200: {"content": {"text/event-stream": {"schema": _STREAM_EVENT}}}},
              summary="Generate tokens as SSE")
    async def generate_stream(request: Request) -> Response:
        return run_stream(state, await parse_body(request, schemas.GenerateRequest))

    @app.post("/", dependencies=auth, tags=["TGI"], openapi_extra=body(schemas.CompatGenerateRequest),
              responses={200: {"model": list[schemas.GenerateResponse]}, **_ERRORS}, summary="Compat generate")
    async def compat_route(request: Request) -> Response:
        return await compat(state, await parse_body(request, schemas.CompatGenerateRequest))

    for path in dict.fromkeys(("/invocations", state.config.scoring_route)):
        app.add_api_route(path, _dispatcher(state), methods=["POST"], dependencies=auth, tags=["TGI"],
                          openapi_extra=body(schemas.CompatGenerateRequest), responses={**_ERRORS, 200: {"content": {
                              "application/json": {"schema": _SCORING_RESPONSE},
                              "text/event-stream": {"schema": _STREAM_EVENT}}}},
                          summary="SageMaker/AzureML scoring: inputs, messages or prompt")

    @app.post("/tokenize", dependencies=auth, tags=["TGI"], openapi_extra=body(schemas.GenerateRequest),
              responses={200: {"model": list[schemas.SimpleToken]}}, summary="Tokenize inputs")
    async def tokenize(request: Request) -> Response:
        req = await parse_body(request, schemas.GenerateRequest)
        try:
            return JSONResponse(await asyncio.to_thread(_tokenize, state, req.inputs))  # not on the event loop
        except RouterError:
            raise
        except Exception as e:  # noqa: BLE001 - tokenizer failures are the client's input
            raise ValidationError(f"tokenizer error {e}") from None

    @app.post("/watermark/detect", dependencies=auth, tags=["rho-serve"],
              openapi_extra=body(schemas.WatermarkDetectRequest),
              responses={200: {"model": schemas.WatermarkDetectResponse}}, summary="Detect this server's watermark")
    async def watermark_detect(request: Request) -> Response:
        req = await parse_body(request, schemas.WatermarkDetectRequest)
        return JSONResponse(await asyncio.to_thread(_watermark, state, req.text))  # tokenizes: not on the loop


def _dispatcher(state: RouterState):
    async def scoring(request: Request) -> Response:
        return await dispatch(state, request)
    return scoring


def _install_openapi(app: FastAPI) -> None:
    """Put the request-body models into components (routes parse bodies themselves)."""
    base = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            doc = base()
            components = doc.setdefault("components", {}).setdefault("schemas", {})
            for model in (schemas.GenerateRequest, schemas.CompatGenerateRequest, schemas.WatermarkDetectRequest,
                          schemas.StreamResponse, schemas.ErrorResponse, schemas.GenerateResponse):
                js = model.model_json_schema(ref_template="#/components/schemas/{model}")
                components.update(js.pop("$defs", {}))
                components[model.__name__] = js
        return app.openapi_schema or doc
    app.openapi = openapi


def create_app(client, config: RouterConfig) -> FastAPI:
    state = build_state(client, config)
    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI):
        await client.start()  # binds the engine client to this server's event loop
        yield

    app = FastAPI(title="rho-serve", lifespan=lifespan, version="0.1.0", docs_url="/docs",
                  openapi_url="/api-doc/openapi.json",
                  description="TGI-compatible text generation server")
    app.state.router = state
    install_error_handlers(app, _count_failure(state))
    app.add_middleware(OverloadGate, infer=state.infer, metrics=state.metrics, api_key=config.api_key,
                       compute_type=state.compute_type)  # inside CORS: refusals carry its headers too
    app.add_middleware(CORSMiddleware, allow_origins=list(config.cors_allow_origin) or ["*"],
                       allow_methods=["GET", "POST"], allow_headers=["content-type", "authorization"])
    app.add_middleware(PayloadLimit, limit=config.payload_limit)
    _register_open(app, state)
    _register_protected(app, state)
    openai_routes.register(app, state)
    chat_tokenize.register(app, state)  # TGI's routes built on the chat machinery
    vertex.register(app, state)
    _install_openapi(app)
    app.add_api_route("/openapi.json", lambda: JSONResponse(app.openapi()), methods=["GET"],
                      include_in_schema=False)  # also where generic tools look (TGI: /api-doc/openapi.json)
    return app
