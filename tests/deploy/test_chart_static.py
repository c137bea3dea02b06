"""The Helm chart checked without helm: values against the schema, `.Values` references, templates as YAML."""
from __future__ import annotations

import copy

import jsonschema
import pytest
import yaml

from tests.deploy.chart_tools import (
    ACTION,
    CHART_DIR,
    COMMENT,
    leaf_paths,
    load_schema,
    load_values,
    manifest_templates,
    template_files,
    value_paths,
    values_references,
    yaml_skeleton,
)


def schema_errors(values: dict) -> list[str]:
    validator = jsonschema.Draft7Validator(load_schema())
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(values)]


def test_schema_is_valid_draft7_and_accepts_the_default_values():
    jsonschema.Draft7Validator.check_schema(load_schema())
    assert schema_errors(load_values()) == []


def schema_node(schema: dict, path: tuple[str, ...]) -> dict | None:
    node = schema
    for key in path:
        node = node.get("properties", {}).get(key)
        if node is None:
            return None
    return node


def test_schema_describes_every_value():
    schema = load_schema()
    missing = [".".join(p) for p in value_paths(load_values()) if not (schema_node(schema, p) or {}).get("description")]
    assert missing == []


@pytest.mark.parametrize("path, bad, message", [
    (("server", "port"), 80, "less than the minimum"),
    (("server", "port"), "8080", "is not of type 'integer'"),
    (("model", "dtype"), "fp8", "is not one of"),
    (("auth", "enabled"), "yes", "is not of type 'boolean'"),
    (("server", "scoringRoute"), "score", "does not match"),
    (("resources", "requests", "memory"), "4 gigs", "does not match"),
    (("autoscaling", "targetCPUUtilizationPercentage"), 120, "greater than the maximum"),
    (("service", "portt"), 80, "Additional properties are not allowed"),
])
def test_schema_rejects_mistakes(path, bad, message):
    values = copy.deepcopy(load_values())
    node = values
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = bad
    errors = schema_errors(values)
    assert any(message in e for e in errors), errors


def test_every_values_reference_in_the_templates_exists_in_values_yaml():
    known = set(value_paths(load_values()))
    used = {(p.name, ref) for p in template_files() for ref in values_references(p.read_text())}
    assert used, "the templates reference no .Values at all"
    unknown = sorted(f"{name}: .Values.{'.'.join(ref)}" for name, ref in used if ref not in known)
    assert unknown == []


def test_every_value_is_used_by_a_template():
    used = {ref for p in template_files() for ref in values_references(p.read_text())}
    # A leaf counts as used when it or one of its parents is referenced (maps are passed whole with toYaml).
    unused = [".".join(p) for p in leaf_paths(load_values()) if not any(p[:n] in used for n in range(1, len(p) + 1))]
    assert unused == []


@pytest.mark.parametrize("template", manifest_templates(), ids=lambda p: p.name)
def test_template_parses_as_a_yaml_document_set(template):
    documents = [d for d in yaml.safe_load_all(yaml_skeleton(template.read_text())) if d is not None]
    assert documents, f"{template.name} holds no YAML document"
    for document in documents:
        assert isinstance(document, dict), f"{template.name}: a document is {type(document).__name__}, not a mapping"
        assert {"apiVersion", "kind", "metadata"} <= document.keys(), f"{template.name}: {sorted(document)}"


def test_yaml_skeleton_catches_broken_indentation():
    broken = "apiVersion: v1\nkind: Service\nmetadata:\n  name: {{ .Release.Name }}\n labels: {}\n"
    with pytest.raises(yaml.YAMLError):
        yaml.safe_load(yaml_skeleton(broken))


def test_chart_metadata():
    chart = yaml.safe_load((CHART_DIR / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2" and chart["name"] == "rho-serve" and chart["type"] == "application"
    assert (CHART_DIR / "templates" / "NOTES.txt").is_file()


def block_balance(text: str) -> int:
    """Opened minus closed template blocks; a `{{ end }}` short or extra breaks the chart."""
    depth = 0
    for action in ACTION.findall(COMMENT.sub("", text)):
        word = action.strip().split(" ", 1)[0].strip("(")
        if word in {"if", "with", "range", "define", "block"}:
            depth += 1
        elif word == "end":
            depth -= 1
            assert depth >= 0, "`end` without an open block"
    return depth


@pytest.mark.parametrize("template", template_files(), ids=lambda p: p.name)
def test_template_blocks_are_balanced(template):
    assert block_balance(template.read_text()) == 0


def test_block_balance_sees_a_missing_end():
    assert block_balance("{{- if .Values.a }}\nx: 1\n{{- with .Values.b }}\n{{- end }}\n") == 1
