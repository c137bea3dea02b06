"""`rho-serve` command line, generated from the fields of EngineConfig and RouterConfig -> (EngineConfig, RouterConfig).

Every flag also reads the environment variable of the same name in upper snake case (`--max-total-tokens` ->
`MAX_TOTAL_TOKENS`), as TGI's launcher does; a flag on the command line wins over the environment, which wins over
the field's default. Flag names, help and parsers come from each field's `setting()` metadata (server/config.py);
a flag shared by both configs (`--max-total-tokens`) sets both. Parsing has no side effects, so tests call
`parse_args(argv, env)` directly.
"""
from __future__ import annotations

import argparse
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path

from router.config import RouterConfig, check_launch
from server.config import DEFAULT_MODEL_DIR, ConfigError, EngineConfig, env_name, flag_of, shown_default

CONFIGS = (EngineConfig, RouterConfig)
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


class CliError(ValueError):
    """A start-up configuration error: printed as one line, exit status 2, no traceback."""


def _value_type(cls, name: str) -> type:
    """The field's type with None taken out (`int | None` -> int)."""
    hint = typing.get_type_hints(cls)[name]
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        hint = next(arg for arg in typing.get_args(hint) if arg is not type(None))
    return hint


def options() -> dict[str, list]:
    """flag -> the fields it sets (one, or the same-named field of both configs)."""
    table: dict[str, list] = {}
    for cls in CONFIGS:
        for f in fields(cls):
            table.setdefault(flag_of(f), []).append((cls, f))
    for flag, targets in table.items():
        assert len({(f.name, f.default) for _, f in targets}) == 1, f"{flag}: configs disagree"
    return table


def _help(f, flag: str) -> str:
    envs = [env_name(flag)] + [env_name(a) for a in f.metadata["aliases"]] + list(f.metadata["extra_env"])
    return f"{f.metadata['help']} [env {', '.join(envs)}; default: {shown_default(f)}]"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rho-serve", description="TGI-compatible text generation server. Every flag also reads the "
        "environment variable of the same name in upper snake case (e.g. MAX_TOTAL_TOKENS); a flag given on the "
        "command line wins over the environment.")
    for flag, [(cls, f), *_] in options().items():
        names = [flag] + ([f.metadata["short"]] if f.metadata["short"] else [])
        if _value_type(cls, f.name) is bool:
            parser.add_argument(*names, dest=f.name, action="store_true", default=None, help=_help(f, flag))
        else:
            parser.add_argument(*names, dest=f.name, default=None, metavar=env_name(flag), help=_help(f, flag))
        for alias in f.metadata["aliases"]:
            parser.add_argument(alias, dest=_alias_dest(alias), default=None, metavar=env_name(alias),
                                help=f"Legacy name of {flag} (giving both is an error) [env {env_name(alias)}]")
        if f.metadata["file_flag"]:
            file_flag = f.metadata["file_flag"]
            parser.add_argument(file_flag, dest=_alias_dest(file_flag), default=None, metavar="PATH",
                                help=f"Read {flag}'s value from this file, e.g. a mounted secret "
                                f"[env {env_name(file_flag)}]")
    return parser


def _alias_dest(flag: str) -> str:
    return "alias_" + flag.lstrip("-").replace("-", "_")


def _parse(cls, f, text: str, source: str):
    kind = _value_type(cls, f.name)
    try:
        if kind is bool:
            if text.lower() not in _TRUE + _FALSE:
                raise ValueError
            return text.lower() in _TRUE
        return (f.metadata["parse"] or kind)(text)
    except ValueError as e:
        detail = f": {e}" if str(e) and f.metadata["parse"] else ""
        raise CliError(f"{source} is not a valid {getattr(kind, '__name__', kind)}{detail}") from None


def _given(ns: argparse.Namespace, env: Mapping[str, str], flag: str, dest: str) -> tuple[str, object] | None:
    """(where it was given, raw value) from the flag, else its env var; None when neither is set."""
    raw = getattr(ns, dest)
    if raw is not None:
        return (flag if raw is True else f"{flag} {raw!r}"), raw
    if env.get(env_name(flag)) not in (None, ""):
        return f"environment variable {env_name(flag)}={env[env_name(flag)]!r}", env[env_name(flag)]
    return None


def _found(f, flag: str, ns: argparse.Namespace, env: Mapping[str, str]) -> list[tuple[str, object, bool]]:
    """(source, raw, flips) where the field is given: its flag or a legacy alias (at most one), else an extra env
    var. `flips`: the raw value turns the field off (`--disable-prefix-caching` for `enable_prefix_caching`)."""
    found = []
    for name in (flag, *f.metadata["aliases"]):
        given = _given(ns, env, name, f.name if name == flag else _alias_dest(name))
        if given is not None:
            found.append((*given, f.metadata["invert"]))
    if len(found) > 1:
        names = " and ".join(f"`{n.lstrip('-').replace('-', '_')}`" for n in (flag, *f.metadata["aliases"]))
        raise CliError(f"{names} are the same setting: pass only one")
    for name in f.metadata["extra_env"]:
        if not found and env.get(name) not in (None, ""):
            found.append((f"environment variable {name}={env[name]!r}", env[name], False))
    return found


def _read(cls, f, flag: str, ns: argparse.Namespace, env: Mapping[str, str]):
    """The field's value as given (flag > env > extra env > file flag); None: not given, keep the default."""
    found = _found(f, flag, ns, env)
    if found:
        source, raw, flips = found[0]
        value = True if raw is True else _parse(cls, f, raw, source)  # True: a switch on the command line
        return (not value) if flips else value
    file_flag = f.metadata["file_flag"]
    if file_flag:
        return _read_file(file_flag, _given(ns, env, file_flag, _alias_dest(file_flag)))
    return None


def _read_file(file_flag: str, given: tuple[str, object] | None) -> str | None:
    if given is None:
        return None
    path = Path(str(given[1]))
    if not path.is_file():
        raise CliError(f"{file_flag} {path} does not exist")
    text = path.read_text().strip()
    if not text:
        raise CliError(f"{file_flag} {path} is empty")
    return text


def resolve(argv: list[str] | None, env: Mapping[str, str]) -> dict[type, dict]:
    """The one resolve step: per config, the fields given by flag or env (the rest keep the dataclass default)."""
    ns = build_parser().parse_args(argv)
    values: dict[type, dict] = {cls: {} for cls in CONFIGS}
    for flag, targets in options().items():
        cls, f = targets[0]
        value = _read(cls, f, flag, ns, env)
        if value is not None:
            for target_cls, target in targets:
                values[target_cls][target.name] = value
    return values


def parse_args(argv: list[str] | None = None,
               env: Mapping[str, str] | None = None) -> tuple[EngineConfig, RouterConfig]:
    values = resolve(argv, os.environ if env is None else env)
    if "model_id" not in values[EngineConfig] and not DEFAULT_MODEL_DIR.is_dir():
        raise CliError(f"no --model-id given and the bundled model {DEFAULT_MODEL_DIR} does not exist yet; "
                       "pass a checkpoint folder with `--model-id /path/to/model` (or env MODEL_ID)")
    try:  # the one validation step: each field's range (the dataclasses), then the rules across fields
        engine, router = EngineConfig(**values[EngineConfig]), RouterConfig(**values[RouterConfig])
        check_launch(engine, router)
    except ConfigError as e:
        raise CliError(str(e)) from None
    return engine, router
