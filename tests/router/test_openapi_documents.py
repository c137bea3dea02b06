"""Our OpenAPI document is served where TGI serves its own and at /openapi.json, and describes every response the
routes really send (issue #15); the shapes TGI documents still validate against TGI's document."""
from __future__ import annotations

import json

import jsonschema
import pytest
from referencing import Registry
from referencing.jsonschema import DRAFT202012

from tests.router.openapi_schema import _nullable

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def ours(http) -> dict:
    doc = http.get("/openapi.json").json()
    assert doc == http.get("/api-doc/openapi.json").json()
    return _nullable(doc)


def check(doc: dict, path: str, method: str, instance, content_type: str = "application/json",
          status: str = "200") -> None:
    """Validate `instance` against the document's schema for this route's response."""
    schema = doc["paths"][path][method]["responses"][status]["content"][content_type]["schema"]
    registry = Registry().with_resource("urn:doc", DRAFT202012.create_resource(doc))
    refs = json.loads(json.dumps(schema).replace('"#/components', '"urn:doc#/components'))
    jsonschema.Draft202012Validator(refs, registry=registry).validate(instance)


def sse(text: str) -> list[dict]:
    return [json.loads(b[5:]) for b in text.split("\n\n") if b.startswith("data:")]


def test_models_list_matches_our_document_tgis_model_info_and_openai(http, ours, schemas):
    body = http.get("/v1/models").json()
    check(ours, "/v1/models", "get", body)
    schemas.validate(body, "ModelInfo")  # TGI's document
    assert body["object"] == "list" and body["data"][0]["id"] == body["id"]  # OpenAI's list


def test_invocations_list_and_openai_bodies_match_our_document(http, ours):
    tgi = http.post("/invocations", json={"inputs": "Hi", "parameters": {"max_new_tokens": 2}}).json()
    assert isinstance(tgi, list)  # TGI's server answers a list (its document says one object)
    check(ours, "/invocations", "post", tgi)
    chat = http.post("/invocations", json={"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}).json()
    check(ours, "/invocations", "post", chat)


def test_stream_tokens_and_error_events_match_both_documents(http, ours, schemas):
    events = sse(http.post("/generate_stream", json={"inputs": "Hi", "parameters": {"max_new_tokens": 2}}).text)
    error = sse(http.post("/generate_stream", json={"inputs": "Hi", "parameters": {"top_n_tokens": 100}}).text)
    assert len(events) == 2 and len(error) == 1 and error[0]["error_type"] == "validation"
    for event in events + error:
        check(ours, "/generate_stream", "post", event, "text/event-stream")
        check(ours, "/invocations", "post", event, "text/event-stream")
    schemas.validate(error[0], "ErrorResponse")


def test_generate_info_tokenize_match_our_document(http, ours):
    check(ours, "/generate", "post", http.post("/generate", json={"inputs": "Hi", "parameters": {
        "max_new_tokens": 2, "details": True, "top_n_tokens": 2}}).json())
    check(ours, "/info", "get", http.get("/info").json())
    check(ours, "/tokenize", "post", http.post("/tokenize", json={"inputs": "Hi there"}).json())
