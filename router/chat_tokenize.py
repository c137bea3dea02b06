"""POST /chat_tokenize (TGI): a chat request templated exactly as /v1/chat/completions would template it (tools
included), and that prompt's tokens: `{"tokenize_response": [{"id", "text", "start", "stop"}], "templated_text"}`.

Not behind the API key (TGI). Counted in tgi_request_count as TGI does, and, unlike TGI, as a success when it
answers, so that requests = successes + failures. Template and tool errors are TGI's 422 bodies.
"""
from __future__ import annotations

from fastapi import FastAPI, Request
from starlette.responses import JSONResponse, Response

from router.accounting import counted
from router.http import read_json, to_model
from router.openai_schemas import ChatCompletionRequest
from router.state import RouterState


def simple_tokens(tokenizer, text: str, add_special_tokens: bool) -> list[dict]:
    """TGI's SimpleToken list: `start` / `stop` are byte offsets into the UTF-8 text."""
    enc = tokenizer(text, add_special_tokens=add_special_tokens, return_offsets_mapping=True)
    out, char_pos, byte_pos = [], 0, 0

    def to_bytes(index: int) -> int:  # one pass: offsets only grow, so each gap of the text is encoded once
        nonlocal char_pos, byte_pos
        if index < char_pos:  # rare (overlapping offsets): count from the start of the text
            return len(text[:index].encode())
        byte_pos += len(text[char_pos:index].encode())
        char_pos = index
        return byte_pos
    for token_id, (start, stop) in zip(enc["input_ids"], enc["offset_mapping"]):
        out.append({"id": token_id, "text": text[start:stop], "start": to_bytes(start), "stop": to_bytes(stop)})
    return out


def register(app: FastAPI, state: RouterState) -> None:
    """Called by router.app.create_app after the OpenAI routes (it uses their chat template)."""
    import router.openai as openai_routes

    @app.post("/chat_tokenize", tags=["TGI"], summary="Template and tokenize a chat request")
    async def chat_tokenize(request: Request) -> Response:
        req = to_model(await read_json(request), ChatCompletionRequest)
        with counted(state.metrics):
            try:
                prompt, _ = openai_routes.chat_as_generate(request.app.state.openai, req)
            except Exception as e:  # noqa: BLE001 - template/tool errors become TGI's error body; others re-raise
                raise openai_routes.as_router_error(e) from None
            tokens = simple_tokens(state.tokenizer, prompt, add_special_tokens=False)  # chat prompts carry their BOS
        return JSONResponse({"tokenize_response": tokens, "templated_text": prompt})
