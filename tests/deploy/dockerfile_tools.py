"""A small Dockerfile reader: stages, their instructions, and what a container of a stage starts with
(ENTRYPOINT + CMD and the ENV chain through parent stages), so tests can run the same command without Docker.
"""
from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
VARIABLE = re.compile(r"\$(?:\{(\w+)\}|(\w+))")


@dataclass
class Instruction:
    keyword: str  # upper case: FROM, RUN, ENV, ...
    args: str  # the rest of the logical line, continuations joined


@dataclass
class Stage:
    base: str  # image or the name of an earlier stage
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [i.args for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> str | None:
        found = self.all(keyword)
        return found[-1] if found else None


def logical_lines(text: str) -> list[str]:
    """Join backslash continuations; drop comments and parser directives (also inside a continuation, like Docker)."""
    lines, current = [], ""
    for raw in text.splitlines():
        if raw.lstrip().startswith("#"):
            continue
        if raw.rstrip().endswith("\\"):
            current += raw.rstrip()[:-1] + " "
            continue
        current += raw
        if current.strip():
            lines.append(current.strip())
        current = ""
    return lines


def parse(text: str) -> list[Stage]:
    stages: list[Stage] = []
    for line in logical_lines(text):
        keyword, _, args = line.partition(" ")
        keyword, args = keyword.upper(), args.strip()
        if keyword == "FROM":
            words = args.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=words[0], name=name))
        elif stages:
            stages[-1].instructions.append(Instruction(keyword, args))
    return stages


def load(path: Path = DOCKERFILE) -> list[Stage]:
    return parse(path.read_text())


def stage(stages: list[Stage], name: str | None = None) -> Stage:
    """A stage by name; None: the last one (what `docker build` without --target builds)."""
    if name is None:
        return stages[-1]
    return next(s for s in stages if s.name == name)


def lineage(stages: list[Stage], target: Stage) -> list[Stage]:
    """The target and the stages it is built FROM, oldest first."""
    chain = [target]
    while any(s.name == chain[0].base for s in stages):
        chain.insert(0, stage(stages, chain[0].base))
    return chain


def env_pairs(args: str) -> list[tuple[str, str]]:
    """`ENV A=1 B="two words"` (or the legacy `ENV A value`) -> [(name, raw value)]."""
    words = shlex.split(args)
    if words and "=" not in words[0]:
        return [(words[0], " ".join(words[1:]))]
    return [tuple(w.split("=", 1)) for w in words]  # type: ignore[misc]


def expand(value: str, env: dict[str, str]) -> str:
    return VARIABLE.sub(lambda m: env.get(m.group(1) or m.group(2), ""), value)


def container_env(stages: list[Stage], target: Stage, base_env: dict[str, str]) -> dict[str, str]:
    """The environment a container of `target` starts with, on top of the base image's (`base_env`)."""
    env = dict(base_env)
    for each in lineage(stages, target):
        for args in each.all("ENV"):
            before = dict(env)  # Docker expands every pair of one ENV with the values from before it
            env.update({name: expand(value, before) for name, value in env_pairs(args)})
    return env


def exec_form(args: str | None) -> list[str]:
    """ENTRYPOINT/CMD in JSON (exec) form; the shell form would put `sh -c` in front and break signal delivery."""
    if args is None:
        return []
    value = json.loads(args)
    assert isinstance(value, list), f"not an exec-form list: {args}"
    return value


def inherited(stages: list[Stage], target: Stage, keyword: str) -> str | None:
    """The last `keyword` instruction along the stage chain (ENTRYPOINT, CMD, USER, HEALTHCHECK are inherited)."""
    for each in reversed(lineage(stages, target)):
        value = each.last(keyword)
        if value is not None:
            return value
    return None


def command(stages: list[Stage], target: Stage) -> list[str]:
    """What the container runs: ENTRYPOINT followed by CMD."""
    return exec_form(inherited(stages, target, "ENTRYPOINT")) + exec_form(inherited(stages, target, "CMD"))
