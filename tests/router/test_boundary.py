"""The router cannot see through the engine seam: it imports no torch and no engine module but the boundary types."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# What the router may import from the engine package: its boundary types and its config (the CLI builds it).
SERVER_ALLOWED = {"server", "server.protocol", "server.config"}
COMPOSITION_ROOT = {"__main__.py"}  # builds the engine (server.load_engine_client) and hands the client over


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):  # function-level (lazy) imports included
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_router_modules_import_no_torch_and_only_engine_boundary_types():
    for path in sorted((ROOT / "router").glob("*.py")):
        names = _imports(path)
        assert not {n for n in names if n.split(".")[0] == "torch"}, path.name
        assert "grammars.mask" not in names, path.name  # token masks are tensors: the engine's
        if path.name not in COMPOSITION_ROOT:
            engine = {n for n in names if n.split(".")[0] == "server"}
            assert engine <= SERVER_ALLOWED, (path.name, engine - SERVER_ALLOWED)


def test_router_and_grammar_compiler_import_with_torch_blocked():
    # sys.modules[name] = None makes `import name` raise ImportError: any torch import on these paths fails.
    code = ("import sys; sys.modules['torch'] = None\n"
            "import router.app, router.openai, router.state, router.infer, router.validation, router.tools\n"
            "import grammars.compiler, grammars.compiled, grammars.state, server.protocol\n"
            "print('ok')")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
