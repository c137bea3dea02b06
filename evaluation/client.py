"""Completion clients for a TGI (`POST /generate`) or OpenAI-compatible (`POST /v1/completions`) endpoint.

Both return the greedy continuation cut *before* the first stop sequence (vLLM's default, which the harness used;
TGI's /generate keeps the stop text, so it is cut here). Overload (429/503) and connection errors are retried with
backoff; a 422 that looks like a length limit is retried with half the token budget, so a model with a short
context still answers as vLLM would (it stops at the model's length); a prompt that does not fit even with 16 new
tokens gets an empty generation, as vLLM gives a prompt longer than the model (counted in `num_too_long`).
Any other HTTP error is an EvalError.
"""
import asyncio
from dataclasses import dataclass

import httpx

from evaluation.errors import EvalError

_RETRY_STATUS = (429, 502, 503, 504)
_MIN_NEW_TOKENS = 16


@dataclass(frozen=True)
class ClientConfig:
    endpoint: str
    api: str = "tgi"  # "tgi" | "openai"
    api_key: str | None = None
    model: str = "default"  # OpenAI "model" field
    timeout_s: float = 600.0
    max_retries: int = 5
    extra_parameters: dict | None = None  # merged into TGI "parameters" / the OpenAI body (e.g. a TGI grammar)


def cut_at_stop(text: str, stops: list[str]) -> str:
    positions = [text.find(stop) for stop in stops if stop and stop in text]
    return text[: min(positions)] if positions else text


class CompletionClient:
    def __init__(self, config: ClientConfig) -> None:
        if config.api not in ("tgi", "openai"):
            raise EvalError(f"--api must be 'tgi' or 'openai', not {config.api!r}")
        headers = {"Authorization": f"Bearer {config.api_key}"} if config.api_key else {}
        self.config = config
        self.num_too_long = 0
        self.http = httpx.AsyncClient(base_url=config.endpoint.rstrip("/"), headers=headers,
                                      timeout=config.timeout_s)  # fmt: skip

    async def close(self) -> None:
        await self.http.aclose()

    def _request(self, prompt: str, max_new_tokens: int, stops: list[str]) -> tuple[str, dict]:
        if self.config.api == "tgi":
            parameters = {"max_new_tokens": max_new_tokens, "do_sample": False, "stop": stops, "details": False}
            return "/generate", {"inputs": prompt, "parameters": {**parameters, **(self.config.extra_parameters or {})}}
        body = {"model": self.config.model, "prompt": prompt, "max_tokens": max_new_tokens, "temperature": 0,
                "top_p": 1, "n": 1, "stop": stops}  # fmt: skip
        return "/v1/completions", {**body, **(self.config.extra_parameters or {})}

    def _text(self, payload: dict) -> str:
        if self.config.api == "tgi":
            return payload["generated_text"]
        return payload["choices"][0]["text"]

    async def complete(self, prompt: str, max_new_tokens: int, stops: list[str]) -> str:
        attempt = 0
        while True:
            path, body = self._request(prompt, max_new_tokens, stops)
            try:
                response = await self.http.post(path, json=body)
            except httpx.TransportError as error:
                if attempt >= self.config.max_retries:
                    raise EvalError(f"cannot reach {self.config.endpoint}{path}: {error!r}") from error
                attempt += 1
                await asyncio.sleep(min(2**attempt * 0.25, 8))
                continue
            if response.status_code == 200:
                return cut_at_stop(self._text(response.json()), stops)
            if response.status_code in _RETRY_STATUS and attempt < self.config.max_retries:
                attempt += 1
                await asyncio.sleep(min(2**attempt * 0.25, 8))
                continue
            if response.status_code == 422 and "token" in response.text:
                if max_new_tokens > _MIN_NEW_TOKENS:
                    max_new_tokens //= 2  # the prompt plus the budget exceed the model's length
                    continue
                self.num_too_long += 1
                return ""
            raise EvalError(f"{self.config.endpoint}{path} answered {response.status_code}: {response.text[:500]}")
