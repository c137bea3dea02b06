"""POST /vertex (TGI's Vertex AI route, router/src/vertex.rs): `{"instances": [...]}` -> `{"predictions": [text]}`.

An instance is `{"inputs", "parameters"?}` (tried first) or a chat request. A generate instance keeps only
`max_new_tokens` and `seed` of its parameters and samples (do_sample=true), as TGI; a chat instance is templated
and parameterised as /v1/chat/completions would do it. Instances run concurrently, each under its own concurrency
permit; a prediction is the generated text (stop strings kept, TGI's /generate text). No instances -> 422
`Input validation error`; any instance failing -> 500 `Incomplete generation` (TGI's bodies, verbatim).
"""
from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import Depends, FastAPI, Request
from pydantic import BaseModel, ConfigDict
from starlette.responses import JSONResponse, Response

from router.accounting import Outcome, counted
from router.errors import RouterError
from router.http import BodyError, read_json, to_model
from router.openai_schemas import ChatCompletionRequest
from router.schemas import GenerateParameters
from router.state import RouterState


class GenerateInstance(BaseModel):
    model_config = ConfigDict(extra="ignore")
    inputs: str
    parameters: GenerateParameters | None = None


class VertexRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    instances: list[Any]


def _instance(raw: Any) -> GenerateInstance | ChatCompletionRequest:
    """TGI's untagged enum: the generate shape if it fits, else a chat request, else the body error."""
    try:
        return to_model(raw, GenerateInstance)
    except BodyError:
        return to_model(raw, ChatCompletionRequest)


def register(app: FastAPI, state: RouterState) -> None:
    import router.openai as openai_routes

    async def predict(instance, start: float) -> str:
        if isinstance(instance, GenerateInstance):
            p = instance.parameters or GenerateParameters()
            text, params, special = instance.inputs, GenerateParameters(
                do_sample=True, max_new_tokens=p.max_new_tokens, seed=p.seed, details=True), True
        else:
            text, params = openai_routes.chat_as_generate(app.state.openai, instance)
            special = False  # chat prompts carry their own BOS (the template's)
        async with state.infer.slot():
            valid = await state.validator.validate(text, params, add_special_tokens=special, received_at=start)
            return (await state.infer.generate(valid)).generated_text

    @app.post("/vertex", dependencies=[Depends(state.require_auth)], tags=["TGI"],
              summary="Vertex AI prediction: instances -> predictions")
    async def vertex(request: Request) -> Response:
        start = time.monotonic()
        req = to_model(await read_json(request), VertexRequest)
        instances = [_instance(raw) for raw in req.instances]
        with counted(state.metrics) as outcome:
            return await _predictions(outcome, [predict(i, start) for i in instances])

    async def _predictions(outcome: Outcome, predictions: list) -> Response:
        if not predictions:
            outcome.failure(RouterError("Input validation error", 422, "validation"))
            return JSONResponse({"error": "Input validation error", "error_type": "Input validation error"},
                                status_code=422)
        results = await asyncio.gather(*predictions, return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            first = errors[0]
            if not isinstance(first, Exception):
                raise first  # cancellation: the client went away
            # Template / tool errors get their type; anything unexpected re-raises to the app's 500 handler.
            outcome.failure(first if isinstance(first, RouterError) else openai_routes.as_router_error(first))
            return JSONResponse({"error": "Incomplete generation", "error_type": "Incomplete generation"},
                                status_code=500)
        return JSONResponse({"predictions": results})
