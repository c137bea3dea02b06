"""A request's `grammar` field -> a validated, canonical `GrammarSpec` and its regular expression.

Accepts TGI's shapes: `{"type": "json" | "json_object", "value": schema}` (schema as an object or a JSON string),
`{"type": "json_schema", "value": {"name"?, "schema"}}`, `{"type": "regex", "value": str}`; and any JSON (a
`json_object` without value, or the empty schema `{}`). Unlike TGI, schemas need no top-level `properties`:
top-level arrays and primitives are allowed. Error texts are TGI's (`grammar is not valid: ...`,
`cannot compile regex from schema: ...`, `grammar is not supported`); the router prefixes `Input validation error: `.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import jsonschema
from outlines_core.json_schema import DATE, build_regex_from_schema

from grammars.integer_range import integer_range_regex, number_range_regex
from grammars.json_values import (ANY_CONTAINER_DEPTH, ANY_JSON_DEPTH, JSON_WHITESPACE,  # noqa: F401 (re-exported)
                                  generic_json_regex, unconstrained_as_placeholders)
from grammars.regex_size import MAX_EXPANDED_SIZE, MAX_REPETITION, measure

# SentencePiece models usually start a text with a `▁`-prefixed token (" {"): JSON may open with one space.
JSON_LEADING_SPACE = r"[ ]?"
JSON_KINDS = ("json", "json_object", "json_schema")

# outlines-core's `date` allows "2023-02-30": days per month, and 29 February in leap years only.
_LEAP_YEAR = r"(?:[0-9]{2}(?:0[48]|[2468][048]|[13579][26])|(?:[02468][048]|[13579][26])00)"
_CALENDAR_DATE = ('"(?:[0-9]{4}-(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)'
                  rf'|02-(?:0[1-9]|1[0-9]|2[0-8]))|{_LEAP_YEAR}-02-29)"')


class GrammarError(ValueError):
    """A grammar the server refuses; str(error) is TGI's message (without `Input validation error: `)."""


@dataclass(frozen=True)
class GrammarSpec:
    """kind: "json" (any of TGI's JSON kinds, normalised) or "regex"; value: the schema as JSON (its own key order,
    which fixes the order properties are generated in), or the regex. `canonical`: the schema with sorted keys, so
    the same schema written in another key order shares one cache entry."""

    kind: str
    value: str
    canonical: str = ""

    @property
    def cache_key(self) -> tuple[str, str]:
        return (self.kind, self.canonical or self.value)


def parse_grammar(grammar: Any) -> GrammarSpec:
    """TGI's `{"type", "value"}` (a dict, or a pydantic model with those fields) -> GrammarSpec."""
    if hasattr(grammar, "model_dump"):
        grammar = grammar.model_dump()
    if not isinstance(grammar, dict) or "type" not in grammar:
        raise GrammarError("grammar is not valid: expected an object {\"type\": ..., \"value\": ...}")
    kind, value = grammar["type"], grammar.get("value")
    if kind == "regex":
        if not isinstance(value, str) or not value:
            raise GrammarError("grammar is not valid: a regex grammar needs a non-empty string `value`")
        check_size(value)
        return GrammarSpec("regex", value)
    if kind not in JSON_KINDS:
        raise GrammarError(f"grammar is not valid: unknown grammar type {kind!r} (expected json, json_object, "
                           "json_schema or regex)")
    schema = _checked_schema(_schema_of(kind, value))
    return GrammarSpec("json", json.dumps(schema, separators=(",", ":"), ensure_ascii=False),
                       json.dumps(schema, sort_keys=True, separators=(",", ":"), ensure_ascii=False))


def _schema_of(kind: str, value: Any) -> Any:
    if value is None and kind == "json_object":
        return {}  # OpenAI's response_format {"type": "json_object"}: any JSON
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as e:
            raise GrammarError(f"grammar is not valid: {e}") from None
    if kind == "json_schema":
        if not isinstance(value, dict) or "schema" not in value:
            raise GrammarError("grammar is not valid: a json_schema grammar needs `value` = {\"name\"?, \"schema\"}")
        value = value["schema"]
    if value is True:
        return {}
    if not isinstance(value, dict):
        raise GrammarError("grammar is not supported")  # TGI's answer for a value that is not an object
    return value


def _checked_schema(schema: dict) -> dict:
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as e:
        raise GrammarError(f"grammar is not valid: {e.message}") from None
    return schema


def regex_of(spec: GrammarSpec) -> str:
    """The regular expression the outlines-core index is built from; GrammarError when it would be absurdly large.

    outlines-core builds a leftmost-first DFA: once the regex has matched, continuations of lower priority are cut
    (`[0-9]{1,4}(\\.[0-9]+)?` allows only EOS after `1234`). Anchoring, `(?:R)$`, restores the full language,
    but multiplies compile time for large nested regexes (any-JSON: 0.08 s -> 56 s). A regex whose every match
    ends with a closing `}` or `]` cannot be cut, so JSON objects and arrays stay unanchored; the rest is anchored.
    Any-JSON stays unanchored too (its regex is the large nested one): a bare top-level number may end early.
    """
    if spec.kind == "regex":
        return f"(?:{ascii_digits(spec.value)})$"
    regex = f"{JSON_LEADING_SPACE}(?:{schema_regex(json.loads(spec.value))})"
    check_size(regex)
    return regex


def schema_regex(schema: Any) -> str:
    """A JSON schema -> the regex of its documents (without the leading space), with our fixes to outlines-core:
    grouped bounded-depth regexes for unconstrained values, integer bounds, calendar dates, ASCII digits.
    Also for callers that embed a schema in a larger regex (tool calls)."""
    body = generic_json_regex(schema)
    if body is not None:
        return body
    try:
        ranges: dict[str, str] = {}
        swapped = unconstrained_as_placeholders(bounded_integers_as_placeholders(schema, ranges), ranges)
        body = build_regex_from_schema(json.dumps(swapped), JSON_WHITESPACE)
        for placeholder, sub_regex in ranges.items():
            body = body.replace(placeholder, sub_regex)
        # Its format regexes use `\d`, which admits any Unicode digit ("꧱4߇１-02-04" as a date).
        body = ascii_digits(body.replace(DATE, _CALENDAR_DATE))
    except GrammarError:
        raise
    except Exception as e:  # outlines-core raises plain exceptions (ValueError, TypeError...) for bad schemas
        raise GrammarError(f"cannot compile regex from schema: {e}") from None
    if not body.startswith(("\\{", "\\[")):
        body = f"(?:{body})$"
    return body


def check_size(regex: str) -> None:
    """Refuse a regex whose counted repetitions are absurd (before anything is built): outlines-core writes out
    every copy. Limits: MAX_REPETITION copies of one element, MAX_EXPANDED_SIZE elements in all."""
    size, copies = measure(regex)
    if copies > MAX_REPETITION or size > MAX_EXPANDED_SIZE:
        raise GrammarError(f"grammar is not valid: it is too large to compile: its repetition counts repeat one "
                           f"element {copies:,} times (at most {MAX_REPETITION:,}) and expand to {size:,} elements "
                           f"(at most {MAX_EXPANDED_SIZE:,}); use smaller counts, `*` or `+`, or a smaller "
                           "maxLength / maxItems")


def bounded_integers_as_placeholders(node: Any, ranges: dict[str, str]) -> Any:
    """outlines-core 0.2.14 ignores `minimum` / `maximum` (it allowed 218 for maximum 65): swap each bounded integer
    or number for a unique string constant, and record the range regex that replaces its (quoted) text once
    outlines-core has built the rest. Number bounds are rounded inward to integers (a subset of the allowed values:
    outputs still validate); a number range holding no integer is left to outlines-core, unenforced."""
    if isinstance(node, list):
        return [bounded_integers_as_placeholders(v, ranges) for v in node]
    if not isinstance(node, dict):
        return node
    node = {k: bounded_integers_as_placeholders(v, ranges) for k, v in node.items()}
    bounds = _bounds(node)
    if bounds is None:
        return node
    try:
        if node["type"] == "integer":
            regex = integer_range_regex(*bounds)
        else:
            regex = number_range_regex(*bounds)
    except ValueError as e:
        if node["type"] == "number":
            return node
        raise GrammarError(f"grammar is not valid: {e}") from None
    placeholder = f"RHORANGE{len(ranges)}"
    ranges[f'"{placeholder}"'] = regex
    rest = {k: v for k, v in node.items() if k not in _BOUND_KEYS}
    return {**rest, "const": placeholder}


_BOUND_KEYS = {"type", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"}


def _bounds(node: dict) -> tuple[int | None, int | None] | None:
    """Integer (low, high) inside a bounded integer or number schema (None: that side is open); None otherwise."""
    if node.get("type") not in ("integer", "number") or "enum" in node or "const" in node:
        return None
    low = [math.ceil(node["minimum"])] if _is_number(node.get("minimum")) else []
    low += [math.floor(node["exclusiveMinimum"]) + 1] if _is_number(node.get("exclusiveMinimum")) else []
    high = [math.floor(node["maximum"])] if _is_number(node.get("maximum")) else []
    high += [math.ceil(node["exclusiveMaximum"]) - 1] if _is_number(node.get("exclusiveMaximum")) else []
    if not low and not high:
        return None
    return (max(low) if low else None, min(high) if high else None)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def ascii_digits(regex: str) -> str:
    r"""Rewrite `\d` as `[0-9]` (`0-9` inside a class): Rust's `\d` is any Unicode digit, 20x slower to compile.

    Every string the rewritten regex matches is matched by the original, so outputs stay valid.
    """
    if "--" in regex:
        return regex  # class subtraction (`[\w--\d]`): narrowing `\d` could widen the class
    out, i, classes = [], 0, []  # classes: one "negated?" flag per open character class (Rust nests them)
    while i < len(regex):
        c = regex[i]
        if c == "\\" and i + 1 < len(regex):
            nxt = regex[i + 1]
            # Inside a negated class, narrowing `\d` would widen the class: keep it there.
            if nxt == "d" and not any(classes):
                out.append("0-9" if classes else "[0-9]")
            else:
                out.append(c + nxt)
            i += 2
            continue
        out.append(c)
        i += 1
        if c == "[":
            negated = i < len(regex) and regex[i] == "^"
            classes.append(negated)
            # A `]` right after `[` or `[^` is a literal, not the end of the class.
            for lead in ("^", "]"):
                if i < len(regex) and regex[i] == lead:
                    out.append(lead)
                    i += 1
        elif c == "]" and classes:
            classes.pop()
    return "".join(out)
