"""TGI's openapi.json (OpenAPI 3.0: `nullable`) -> JSON Schema 2020-12 validation of our bodies and events."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import jsonschema
from referencing import Registry
from referencing.jsonschema import DRAFT202012


def _nullable(node):
    """`nullable: true` becomes "or null" (JSON Schema has no `nullable`)."""
    if isinstance(node, list):
        return [_nullable(x) for x in node]
    if not isinstance(node, dict):
        return node
    node = {k: _nullable(v) for k, v in node.items()}
    if node.pop("nullable", False):
        if "type" in node and "enum" not in node:
            node["type"] = [node["type"], "null"] if isinstance(node["type"], str) else [*node["type"], "null"]
        else:
            node = {"anyOf": [node, {"type": "null"}]}
    return node


class OpenApiSchemas:
    def __init__(self, path: Path):
        doc = _nullable(copy.deepcopy(json.loads(path.read_text())))
        self.names = set(doc["components"]["schemas"])
        self.registry = Registry().with_resource("urn:tgi", DRAFT202012.create_resource(doc))

    def validate(self, instance, name: str) -> None:
        """Raises jsonschema.ValidationError when `instance` does not match components/schemas/<name>."""
        assert name in self.names, name
        validator = jsonschema.Draft202012Validator({"$ref": f"urn:tgi#/components/schemas/{name}"},
                                                    registry=self.registry)
        validator.validate(instance)
