"""Chat templates: where a model's template comes from, and rendering it safely.

Discovery, first match wins (TGI's order, plus the file newer transformers write, TGI #3247):
  1. the `--chat-template` file given to the launcher;
  2. `chat_template.jinja` in the model folder;
  3. `chat_template.json` (`{"chat_template": "..."}`);
  4. `tokenizer_config.json` `chat_template`: a string, or a list of `{"name", "template"}` (the one named `default`);
  5. `processor_config.json` `chat_template`;
  6. otherwise DEFAULT_CHAT_TEMPLATE (documented below).

Rendering runs in `jinja2.sandbox.ImmutableSandboxedEnvironment` (templates cannot touch Python internals or mutate
their inputs) with the names HF templates expect: `messages`, `tools`, `bos_token`, `eos_token`,
`add_generation_prompt`, `raise_exception(msg)`, `strftime_now(fmt)`, and a `tojson` that keeps non-ASCII text.
Every failure (syntax, `raise_exception`, a runtime error in the template) becomes a `TemplateError`, which the
OpenAI routes answer with 422 `Template error: ...`.

The default template (models without one, e.g. the Rho-Math base models) is plain text, one turn per line:

    System: <system text>
    User: <user text>
    Assistant: <assistant text>            (a tool call is written as its JSON: {"name": ..., "arguments": {...}})
    Tool (<tool_call_id>): <tool result>   (also a legacy `function` message: Tool (<name>): <result>)
    Assistant:                             (the generation prompt: the model continues after "Assistant:")

preceded by the BOS token, and, when tools are given, by a `Tools:` block listing them as JSON with the answer format.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

DEFAULT_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% if tools %}Tools: answer with one JSON object {\"name\": <function name>, \"arguments\": <object>} "
    "to call one of these functions, or answer in plain text.\n"
    "{% for tool in tools %}{{ tool | tojson }}\n{% endfor %}{{ '\\n' }}{% endif %}"
    "{% for message in messages %}"
    "{% if message.role == 'system' %}System: {{ message.content }}\n"
    "{% elif message.role == 'user' %}User: {{ message.content }}\n"
    "{% elif message.role == 'assistant' %}Assistant: "
    "{% if message.content %}{{ message.content }}{% endif %}"
    "{% for call in message.tool_calls or [] %}"
    "{{ {'name': call.function.name, 'arguments': call.function.arguments} | tojson }}"
    "{% endfor %}{{ '\\n' }}"
    "{% elif message.role in ('tool', 'function') %}Tool ({{ message.tool_call_id or message.name or '' }}): {{ message.content }}\n"
    "{% else %}{{ raise_exception('unknown role: ' ~ message.role) }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)

# Tags some templates wrap assistant turns in (for training masks); they carry no text.
_GENERATION_TAGS = re.compile(r"{%-?\s*(?:end)?generation\s*-?%}")


class TemplateError(ValueError):
    """The chat template is missing, invalid, or refused the messages (HTTP 422, error_type template_error)."""


@dataclass(frozen=True)
class TemplateSource:
    text: str
    origin: str  # where it was found, for the start-up log


def _template_from_config(config: dict, origin: str) -> TemplateSource | None:
    value = config.get("chat_template")
    if isinstance(value, str):
        return TemplateSource(value, origin)
    if isinstance(value, list):
        named = {item.get("name"): item.get("template") for item in value if isinstance(item, dict)}
        if isinstance(named.get("default"), str):
            return TemplateSource(named["default"], f"{origin} (named 'default')")
    return None


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise TemplateError(f"cannot read {path}: {e}") from None
    return data if isinstance(data, dict) else {}


def find_chat_template(model_dir: Path | str, override: Path | str | None = None) -> TemplateSource:
    """The model's chat template (see the module docstring for the order); the default when it has none."""
    if override is not None:
        path = Path(override)
        try:
            return TemplateSource(path.read_text(encoding="utf-8"), str(path))
        except OSError as e:
            raise TemplateError(f"cannot read the chat template file {path}: {e}") from None
    folder = Path(model_dir)
    jinja_file = folder / "chat_template.jinja"
    if jinja_file.is_file():
        return TemplateSource(jinja_file.read_text(encoding="utf-8"), str(jinja_file))
    for name in ("chat_template.json", "tokenizer_config.json", "processor_config.json"):
        path = folder / name
        if path.is_file():
            found = _template_from_config(_read_json(path), str(path))
            if found is not None:
                return found
    return TemplateSource(DEFAULT_CHAT_TEMPLATE, "default (User:/Assistant: plain text)")


def _raise_exception(message: str) -> None:
    raise TemplateError(message)


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None, separators=None,
            sort_keys: bool = False) -> str:
    # Jinja's own tojson HTML-escapes `<>&'`, which would change the prompt text.
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def _environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[jinja2.ext.loopcontrols], undefined=jinja2.Undefined)
    env.filters["tojson"] = _tojson
    env.globals.update(raise_exception=_raise_exception, strftime_now=_strftime_now)
    return env


class ChatTemplate:
    """A compiled chat template bound to the model's special tokens."""

    def __init__(self, source: TemplateSource, bos_token: str | None, eos_token: str | None):
        self.origin = source.origin
        self.text = _GENERATION_TAGS.sub("", source.text)
        self.bos_token = bos_token or ""
        self.eos_token = eos_token or ""
        try:
            self._template = _environment().from_string(self.text)
        except jinja2.TemplateSyntaxError as e:
            raise TemplateError(f"syntax error in the chat template ({self.origin}) line {e.lineno}: "
                                f"{e.message}") from None
        # Templates that never mention tools get the tool list appended to the last message instead (TGI's rule).
        self.handles_tools = re.search(r"\btools\b", self.text) is not None

    def render(self, messages: list[dict], tools: list[dict] | None = None,
               add_generation_prompt: bool = True) -> str:
        """Render the prompt. A final assistant message is continued (no generation prompt, its text not closed)."""
        last = messages[-1] if messages else {}
        continue_final = last.get("role") == "assistant" and not last.get("tool_calls")
        try:
            text = self._template.render(
                messages=messages, tools=tools or None, bos_token=self.bos_token, eos_token=self.eos_token,
                add_generation_prompt=add_generation_prompt and not continue_final)
        except TemplateError:
            raise
        except jinja2.TemplateError as e:
            raise TemplateError(str(e)) from None
        except Exception as e:  # a template bug (e.g. indexing a missing key) must not become a 500
            raise TemplateError(f"{type(e).__name__}: {e}") from None
        return _cut_after_final(text, messages[-1].get("content")) if continue_final else text


def _cut_after_final(text: str, content: Any) -> str:
    # Drop whatever the template closes the last assistant turn with (e.g. an EOS), so the model continues it.
    if not isinstance(content, str) or not content:
        return text
    end = text.rfind(content)
    return text[:end + len(content)] if end >= 0 else text


def load_chat_template(model_dir: Path | str, tokenizer: Any, override: Path | str | None = None) -> ChatTemplate:
    """Find and compile the template for a loaded tokenizer (its BOS/EOS strings fill `bos_token`/`eos_token`)."""
    return ChatTemplate(find_chat_template(model_dir, override),
                        getattr(tokenizer, "bos_token", None), getattr(tokenizer, "eos_token", None))
