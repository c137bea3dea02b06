"""Reading the Helm chart without helm: values paths, template `.Values` references, templates as YAML skeletons;
and rendering it with helm (the `helm` binary, else Helm's Go SDK through the `helm-python-sdk` wheel) where present.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import yaml

CHART_DIR = Path(__file__).resolve().parents[2] / "helm" / "rho-serve"
TEMPLATES_DIR = CHART_DIR / "templates"

# `.Values.a.b` or `$.Values.a.b`; index expressions like `index .Values "a"` are not used by the chart.
VALUES_REF = re.compile(r"\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)")
ACTION = re.compile(r"\{\{-?(.*?)-?\}\}", re.DOTALL)
COMMENT = re.compile(r"\{\{-?\s*/\*.*?\*/\s*-?\}\}", re.DOTALL)
NINDENT = re.compile(r"\|\s*nindent\s+(\d+)")


def load_values() -> dict:
    return yaml.safe_load((CHART_DIR / "values.yaml").read_text())


def load_schema() -> dict:
    return json.loads((CHART_DIR / "values.schema.json").read_text())


def value_paths(values: dict, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every path in values.yaml, parents included: ("server",), ("server", "port"), ..."""
    for key, value in values.items():
        path = (*prefix, key)
        yield path
        if isinstance(value, dict):
            yield from value_paths(value, path)


def leaf_paths(values: dict, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Paths whose value is not a non-empty mapping (what a user sets)."""
    for key, value in values.items():
        path = (*prefix, key)
        if isinstance(value, dict) and value:
            yield from leaf_paths(value, path)
        else:
            yield path


def template_files() -> list[Path]:
    return sorted(p for p in TEMPLATES_DIR.rglob("*") if p.is_file())


def manifest_templates() -> list[Path]:
    """Templates that render Kubernetes YAML (not helpers, not NOTES.txt)."""
    return [p for p in template_files() if p.suffix == ".yaml"]


def values_references(text: str) -> set[tuple[str, ...]]:
    return {tuple(m.group(1).lstrip(".").split(".")) for m in VALUES_REF.finditer(text)}


def yaml_skeleton(text: str) -> str:
    """A template with its actions replaced so that YAML can parse it.

    Lines that hold only an action are control flow (if/with/range/end: dropped) or output an indented block
    (`... | nindent N`: replaced by a placeholder key at that indent). Inline actions become a placeholder scalar.
    Both branches of every `if` stay, so each branch must be valid YAML at its place.
    """
    text = COMMENT.sub("", text)
    lines = []
    for line in text.splitlines():
        stripped = line.strip()
        if ACTION.fullmatch(stripped):
            nindent = NINDENT.search(stripped)
            if nindent:
                lines.append(block_placeholder(lines, int(nindent.group(1))))
            continue
        lines.append(ACTION.sub("placeholder", line))
    return "\n".join(lines) + "\n"


def block_placeholder(previous: list[str], indent: int) -> str:
    """A stand-in for an indented block: a sequence item when it continues a sequence at that indent, else a key."""
    for line in reversed(previous):
        if line.strip() and len(line) - len(line.lstrip()) <= indent:
            is_item = len(line) - len(line.lstrip()) == indent and line.lstrip().startswith("- ")
            return " " * indent + ("- templated-item" if is_item else "templated-block: placeholder")
    return " " * indent + "templated-block: placeholder"


class Helm:
    """`lint` and `render` through the helm binary or Helm's Go SDK (helm-python-sdk); `find()` is None without both."""

    def __init__(self, binary: str | None):
        self.binary = binary

    @classmethod
    def find(cls) -> Helm | None:
        binary = shutil.which("helm")
        if binary:
            return cls(binary)
        try:
            import helm_python  # noqa: F401
        except ImportError:
            return None
        return cls(None)

    @property
    def name(self) -> str:
        return f"helm binary {self.binary}" if self.binary else "Helm Go SDK (helm-python-sdk)"

    def lint(self, values: dict | None = None) -> list[str]:
        """Warnings and errors of `helm lint --strict` (informational messages dropped)."""
        if self.binary:
            return self._lint_binary(values)
        import helm_python

        report = helm_python.lint(CHART_DIR, values, strict=True)
        return [f"{m['path']}: {m['error']}" for m in report["messages"] if m["severity"] >= 2] + report["errors"]

    def _lint_binary(self, values: dict | None) -> list[str]:
        args = [self.binary, "lint", "--strict", str(CHART_DIR), *self._values_args(values)]
        result = subprocess.run(args, capture_output=True, text=True, check=False)
        problems = [line for line in result.stdout.splitlines() if line.startswith(("[WARNING]", "[ERROR]"))]
        return problems if result.returncode == 0 else problems + [result.stdout + result.stderr]

    def render(self, values: dict | None = None, name: str = "demo", namespace: str = "ml") -> dict[str, str]:
        """Template path -> rendered text, as `helm template` (install) produces them."""
        if self.binary:
            return self._render_binary(values, name, namespace)
        import helm_python

        chart = helm_python.Chart.load(CHART_DIR)
        chart.validate_schema(values)  # `helm template` validates values against values.schema.json too
        return chart.render(values, name=name, namespace=namespace, is_install=True)

    def _render_binary(self, values: dict | None, name: str, namespace: str) -> dict[str, str]:
        args = [self.binary, "template", name, str(CHART_DIR), "--namespace", namespace, *self._values_args(values)]
        result = subprocess.run(args, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RenderError(result.stderr)
        rendered: dict[str, str] = {}
        for chunk in result.stdout.split("\n---\n"):
            source = re.search(r"^# Source: (.+)$", chunk, re.MULTILINE)
            if source:
                rendered[source.group(1)] = rendered.get(source.group(1), "") + chunk + "\n---\n"
        return rendered

    @staticmethod
    def _values_args(values: dict | None) -> list[str]:
        if not values:
            return []
        handle, path = tempfile.mkstemp(suffix=".json")
        with os.fdopen(handle, "w") as file:
            json.dump(values, file)  # JSON is YAML: helm reads it as a values file
        return ["--values", path]

    def manifests(self, values: dict | None = None) -> list[dict]:
        """Every Kubernetes object the chart renders (NOTES.txt left out)."""
        objects = []
        for path, text in sorted(self.render(values).items()):
            if path.endswith(".yaml"):
                objects.extend(doc for doc in yaml.safe_load_all(text) if doc)
        return objects

    def render_error(self, values: dict) -> str:
        """The message of a render that must fail."""
        try:
            self.render(values)
        except Exception as err:  # RenderError (binary) or helm_python.HelmError (SDK)
            return str(err)
        raise AssertionError(f"rendering with {values} succeeded")


class RenderError(RuntimeError):
    """`helm template` failed."""
