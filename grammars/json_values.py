"""Unconstrained JSON values: our bounded-depth regexes for any value / object / array, and the schema walk that
swaps every unconstrained subschema for a placeholder before outlines-core turns the rest into a regex.

Why: outlines-core 0.2.14 writes `{}` (pydantic's `Any`) as an ungrouped alternation, `(true|false)|(null)|...`,
so inside `{"data": <any>}` the `|` splits the whole object regex and a bare number becomes a complete match
(issue #17: ` 418.0571...` served for an object schema). Its nested any-value regex is also huge (15 s to compile
at vocabulary 1k). Our regexes are grouped, and bounded in depth so the automaton stays small.
"""
from __future__ import annotations

from typing import Any

# One optional space between JSON tokens: a weak or random model cannot loop on whitespace (TGI's choice too).
JSON_WHITESPACE = r"[ ]?"
_ANNOTATIONS = {"title", "description", "$schema", "$id", "$comment", "examples", "default", "deprecated",
                "readOnly", "writeOnly"}
ANY_JSON_DEPTH = 3  # nesting levels of objects / arrays in a top-level any-JSON; deeper values are primitives
# A top-level object / array alone compiles far slower than inside the any-JSON alternation (0.4 s vs 0.006 s at
# depth 2, vocabulary 1k; 12 s at depth 3): their values nest one level less.
ANY_CONTAINER_DEPTH = 2
# An unconstrained value inside a schema: each one costs its own copy of the automaton (at vocabulary 32k about
# 0.35 s at depth 2, 1.4 s at depth 3), so nested values get one level of containers.
NESTED_ANY_DEPTH = 2
_STRING = r'"(?:[^"\\\x00-\x1F\x7F-\x9F]|\\["\\/bfnrt])*"'
_NUMBER = r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?"
_PRIMITIVE = rf"(?:{_STRING}|{_NUMBER}|true|false|null)"

# Keywords whose value is one subschema, a list of subschemas, or a map name -> subschema (JSON Schema 2020-12).
# Value slots (a subschema there describes one generated value) get placeholders; the others are only walked
# (`additionalProperties: true` is a rule about extra keys, not a value to generate).
_ONE = ("items",)
_LIST = ("prefixItems", "anyOf", "oneOf")
_MAP = ("properties", "$defs", "definitions")
_WALK_ONE = ("additionalProperties", "not", "contains", "propertyNames", "if", "then", "else", "additionalItems",
             "unevaluatedItems", "unevaluatedProperties")
_WALK_LIST = ("allOf",)
_WALK_MAP = ("patternProperties", "dependentSchemas")


def generic_json_regex(schema: Any, nested: bool = False) -> str | None:
    """A grouped regex for an unconstrained schema: `{}` / `true` (any value), `{"type": "object"}` (any object),
    `{"type": "array"}` (any array), annotations aside; None for any other schema. `nested`: inside a schema."""
    if schema is True:
        schema = {}
    if not isinstance(schema, dict):
        return None
    rest = {k: v for k, v in schema.items() if k not in _ANNOTATIONS}
    depth = NESTED_ANY_DEPTH if nested else ANY_JSON_DEPTH
    if not rest:
        return json_value(depth)
    if rest in ({"type": "object"}, {"type": "object", "additionalProperties": True}, {"type": "object",
                                                                                        "additionalProperties": {}}):
        return json_object(json_value(min(depth, ANY_CONTAINER_DEPTH) - 1))
    if rest in ({"type": "array"}, {"type": "array", "items": {}}, {"type": "array", "items": True}):
        return json_array(json_value(min(depth, ANY_CONTAINER_DEPTH) - 1))
    return None


def has_unconstrained_value(schema: Any) -> bool:
    """True when some subschema (the schema itself included) accepts any value, object or array."""
    found = []
    unconstrained_as_placeholders(schema, {}, found_only=found)
    return bool(found)


def unconstrained_as_placeholders(schema: Any, regexes: dict[str, str], found_only: list | None = None) -> Any:
    """The schema with each nested unconstrained subschema replaced by a unique string constant; `regexes` gets
    `'"PLACEHOLDER"' -> grouped regex` to substitute in outlines-core's regex. Only subschema positions are walked
    (a `const: {}` or `default: {}` is data, not a schema). The top level is left to the caller."""
    if not isinstance(schema, dict):
        return schema
    out = dict(schema)
    for key in _ONE:
        if key in out:
            out[key] = _swap(out[key], regexes, found_only)
    for key in _LIST:
        if isinstance(out.get(key), list):
            out[key] = [_swap(s, regexes, found_only) for s in out[key]]
    for key in _MAP:
        if isinstance(out.get(key), dict):
            out[key] = {name: _swap(s, regexes, found_only) for name, s in out[key].items()}
    if isinstance(out.get("items"), list):  # draft-4 tuple items
        out["items"] = [_swap(s, regexes, found_only) for s in out["items"]]
    walk = lambda s: unconstrained_as_placeholders(s, regexes, found_only)  # noqa: E731
    for key in _WALK_ONE:
        if key in out:
            out[key] = walk(out[key])
    for key in _WALK_LIST:
        if isinstance(out.get(key), list):
            out[key] = [walk(s) for s in out[key]]
    for key in _WALK_MAP:
        if isinstance(out.get(key), dict):
            out[key] = {name: walk(s) for name, s in out[key].items()}
    return out


def _swap(subschema: Any, regexes: dict[str, str], found_only: list | None) -> Any:
    if subschema is False or (isinstance(subschema, dict) and "$ref" in subschema):
        return subschema
    regex = generic_json_regex(subschema, nested=True)
    if regex is None:
        return unconstrained_as_placeholders(subschema, regexes, found_only)
    if found_only is not None:
        found_only.append(subschema)
        return subschema
    placeholder = f"RHOANY{len(regexes)}"
    regexes[f'"{placeholder}"'] = regex
    return {"const": placeholder}


def json_value(depth: int) -> str:
    if depth <= 0:
        return _PRIMITIVE
    inner = json_value(depth - 1)
    return f"(?:{_PRIMITIVE}|{json_object(inner)}|{json_array(inner)})"


def json_object(value: str) -> str:
    ws, member = JSON_WHITESPACE, f"{_STRING}{JSON_WHITESPACE}:{JSON_WHITESPACE}{value}"
    return rf"(?:\{{{ws}(?:{member}(?:{ws},{ws}{member})*)?{ws}\}})"


def json_array(value: str) -> str:
    ws = JSON_WHITESPACE
    return rf"(?:\[{ws}(?:{value}(?:{ws},{ws}{value})*)?{ws}\])"


def most_optional_properties(schema: Any) -> int:
    """The largest number of optional properties of one object in the schema (outlines-core's regex enumerates
    their orders: 60 of them take ~2 s at vocabulary 32k, TGI #2902)."""
    if isinstance(schema, list):
        return max((most_optional_properties(s) for s in schema), default=0)
    if not isinstance(schema, dict):
        return 0
    own = 0
    if isinstance(schema.get("properties"), dict):
        own = len(set(schema["properties"]) - set(schema.get("required") or []))
    return max([own] + [most_optional_properties(v) for k, v in schema.items() if k not in ("const", "enum",
                                                                                             "default", "examples")])
