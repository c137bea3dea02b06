"""The JSON schemas and regexes the grammar tests and the benchmark generate with (shared so both use the same)."""
from __future__ import annotations

from enum import Enum
from typing import Any

from pydantic import BaseModel, Field


class Color(str, Enum):
    red = "red"
    green = "green"
    blue = "blue"


class Item(BaseModel):
    sku: str = Field(pattern=r"^[A-Z]{3}[0-9]{2}$")
    quantity: int = Field(ge=1, le=99)
    color: Color | None = None


class Order(BaseModel):
    order_id: int
    items: list[Item] = Field(max_length=3)
    express: bool = False


SCHEMAS: dict[str, dict] = {
    "nested_objects": {
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 6},
            "address": {"type": "object", "properties": {
                "city": {"type": "string", "maxLength": 5},
                "zip": {"type": "string", "pattern": "^[0-9]{5}$"}},
                "required": ["city", "zip"]}},
        "required": ["name", "address"],
    },
    "array_of_items": {
        "type": "object",
        "properties": {"points": {"type": "array", "minItems": 1, "maxItems": 4,
                                  "items": {"type": "object", "properties": {"x": {"type": "integer"},
                                                                             "y": {"type": "integer"}},
                                            "required": ["x", "y"]}}},
        "required": ["points"],
    },
    "enum_const": {
        "type": "object",
        "properties": {"status": {"enum": ["ok", "error", "pending"]}, "version": {"const": 2},
                       "level": {"enum": [1, 2, 3, None]}},
        "required": ["status", "version", "level"],
    },
    "string_pattern": {
        "type": "object",
        "properties": {"code": {"type": "string", "pattern": "^[A-Z]{2}-[0-9]{3}$"},
                       "hex": {"type": "string", "pattern": "^#[0-9a-f]{6}$"}},
        "required": ["code", "hex"],
    },
    "formats": {
        "type": "object",
        "properties": {"start": {"type": "string", "format": "date"}, "end": {"type": "string", "format": "date"}},
        "required": ["start", "end"],
    },
    "number_bounds": {
        "type": "object",
        "properties": {"age": {"type": "integer", "minimum": 18, "maximum": 65},
                       "score": {"type": "integer", "minimum": -5, "maximum": 5},
                       "ratio": {"type": "number"}},
        "required": ["age", "score", "ratio"],
    },
    "required_optional": {
        "type": "object",
        "properties": {"a": {"type": "integer"}, "b": {"type": "boolean"}, "c": {"type": "null"},
                       "d": {"type": "string", "maxLength": 4}},
        "required": ["a"],
        "additionalProperties": False,
    },
    "refs_defs": {
        "$defs": {"point": {"type": "object", "properties": {"x": {"type": "integer", "minimum": 0, "maximum": 99},
                                                             "y": {"type": "integer", "minimum": 0, "maximum": 99}},
                            "required": ["x", "y"]}},
        "type": "object",
        "properties": {"start": {"$ref": "#/$defs/point"}, "end": {"$ref": "#/$defs/point"}},
        "required": ["start", "end"],
    },
    "any_one_of": {
        "type": "object",
        "properties": {
            "value": {"anyOf": [{"type": "integer"}, {"type": "boolean"}, {"type": "string", "maxLength": 3}]},
            "shape": {"oneOf": [
                {"type": "object", "properties": {"r": {"type": "integer"}}, "required": ["r"],
                 "additionalProperties": False},
                {"type": "object", "properties": {"w": {"type": "integer"}, "h": {"type": "integer"}},
                 "required": ["w", "h"], "additionalProperties": False}]}},
        "required": ["value", "shape"],
    },
    "pydantic_order": Order.model_json_schema(),
    "top_level_array": {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 9}, "maxItems": 5},
    "primitive_integer": {"type": "integer"},
    "primitive_enum": {"enum": ["yes", "no", 42, True]},
    "uuid_format": {"type": "string", "format": "uuid"},
    "any_json": {},
    "any_object": {"type": "object"},
}

REGEXES: dict[str, str] = {
    "phone": r"\(\d{3}\) \d{3}-\d{4}",
    "iso_date": r"\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])",
    "decimal": r"-?\d{1,4}(\.\d{1,3})?",
    "ipv4": r"((25[0-5]|2[0-4][0-9]|1?[0-9]{1,2})\.){3}(25[0-5]|2[0-4][0-9]|1?[0-9]{1,2})",
    "hex_color": r"#[0-9a-fA-F]{6}",
    "email": r"[a-z]{1,8}@[a-z]{1,8}\.(com|org|net)",
    "choice": r"(yes|no|maybe)",
    "prefix_alternation": r"a|ab|abc",
    "sentence": r"[A-Z][a-z]{0,6}( [a-z]{1,6}){0,3}\.",
    "time": r"([01][0-9]|2[0-3]):[0-5][0-9]",
    "unicode": r"(café|naïve|π|∑){1,3}",
    "key_value": r"[a-z]{1,5}=[0-9]{1,3}(;[a-z]{1,5}=[0-9]{1,3}){0,2}",
}


class ToolArgs(BaseModel):
    """What pydantic emits for `Any` (a tool's free-form parameter), beside a typed one."""
    query: str
    payload: Any


# Schemas whose values are unconstrained (issue #17): outlines-core's own regex for `{}` let a bare number through.
ANY_VALUE_SCHEMAS: dict[str, dict] = {
    "one_any_property": {"type": "object", "properties": {"data": {}}, "required": ["data"]},
    "two_any_properties": {"type": "object", "properties": {"data": {}, "meta": {}}, "required": ["data", "meta"]},
    "pydantic_any": ToolArgs.model_json_schema(),
    "any_object_and_array": {"type": "object", "properties": {
        "options": {"type": "object", "additionalProperties": True}, "rows": {"type": "array", "items": {}}},
        "required": ["options", "rows"]},
    "any_in_array_of_objects": {"type": "array", "maxItems": 2, "items": {
        "type": "object", "properties": {"id": {"type": "integer"}, "value": {}}, "required": ["id", "value"]}},
    "any_json": {},
}
