"""Chat template discovery (every source, in order) and sandboxed rendering."""
from __future__ import annotations

import json
from datetime import datetime

import pytest

from router.chat_template import (DEFAULT_CHAT_TEMPLATE, ChatTemplate, TemplateError, TemplateSource,
                                  find_chat_template, load_chat_template)

CHATML = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def _template(text: str = DEFAULT_CHAT_TEMPLATE, bos: str | None = "<s>", eos: str | None = "</s>") -> ChatTemplate:
    return ChatTemplate(TemplateSource(text, "test"), bos, eos)


def test_discovery_order(tmp_path):
    assert find_chat_template(tmp_path).text == DEFAULT_CHAT_TEMPLATE
    (tmp_path / "processor_config.json").write_text(json.dumps({"chat_template": "P"}))
    assert find_chat_template(tmp_path).text == "P"
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": "T", "bos_token": "<s>"}))
    assert find_chat_template(tmp_path).text == "T"
    (tmp_path / "chat_template.json").write_text(json.dumps({"chat_template": "J"}))
    assert find_chat_template(tmp_path).text == "J"
    (tmp_path / "chat_template.jinja").write_text("JINJA")
    assert find_chat_template(tmp_path).text == "JINJA"
    override = tmp_path / "mine.jinja"
    override.write_text("MINE")
    assert find_chat_template(tmp_path, override).text == "MINE"
    assert find_chat_template(tmp_path, str(override)).origin == str(override)


def test_named_template_list_picks_default(tmp_path):
    named = [{"name": "tool_use", "template": "TOOLS"}, {"name": "default", "template": "DEFAULT"}]
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": named}))
    source = find_chat_template(tmp_path)
    assert source.text == "DEFAULT" and "default" in source.origin


def test_missing_override_and_broken_config_are_template_errors(tmp_path):
    with pytest.raises(TemplateError, match="cannot read the chat template file"):
        find_chat_template(tmp_path, tmp_path / "absent.jinja")
    (tmp_path / "tokenizer_config.json").write_text("{not json")
    with pytest.raises(TemplateError, match="tokenizer_config.json"):
        find_chat_template(tmp_path)


def test_default_template_renders_every_role():
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "22 C"},
    ]
    text = _template().render(messages)
    assert text == ("<s>System: Be brief.\nUser: Weather in Paris?\n"
                    'Assistant: {"name": "get_weather", "arguments": {"city": "Paris"}}\n'
                    "Tool (call_1): 22 C\nAssistant:")
    assert _template().render(messages[:2], add_generation_prompt=False).endswith("User: Weather in Paris?\n")


def test_default_template_lists_tools():
    tools = [{"type": "function", "function": {"name": "f", "description": "café <b>", "parameters": {}}}]
    text = _template().render([{"role": "user", "content": "hi"}], tools=tools)
    assert text.startswith("<s>Tools: ")
    assert json.dumps(tools[0], ensure_ascii=False) in text  # tojson keeps non-ASCII and does not HTML-escape
    assert _template().handles_tools


def test_final_assistant_message_is_continued():
    template = _template(CHATML + "{{ eos_token }}")
    messages = [{"role": "user", "content": "Count:"}, {"role": "assistant", "content": "1, 2,"}]
    text = template.render(messages)
    assert text.endswith("<|im_start|>assistant\n1, 2,")  # not closed, no new generation prompt


def test_template_functions_and_errors():
    now = _template("{{ strftime_now('%Y') }}").render([{"role": "user", "content": "x"}])
    assert now == str(datetime.now().year)
    with pytest.raises(TemplateError, match="only user and assistant"):
        _template("{{ raise_exception('only user and assistant') }}").render([{"role": "user", "content": "x"}])
    with pytest.raises(TemplateError, match="syntax error"):
        _template("{% for m in messages %}")
    with pytest.raises(TemplateError, match="unknown role"):
        _template().render([{"role": "narrator", "content": "x"}])
    with pytest.raises(TemplateError):  # runtime errors inside the template are template errors, not 500s
        _template("{{ messages[5]['content'] + 1 }}").render([{"role": "user", "content": "x"}])


def test_sandbox_blocks_python_internals_and_mutation():
    with pytest.raises(TemplateError):
        _template("{{ ''.__class__.__mro__[1].__subclasses__() }}").render([{"role": "user", "content": "x"}])
    with pytest.raises(TemplateError):
        _template("{{ messages.append({'role': 'user'}) }}").render([{"role": "user", "content": "x"}])


def test_generation_tags_are_stripped_and_missing_bos_is_empty():
    template = _template("{% generation %}{{ bos_token }}{{ messages[0].content }}{% endgeneration %}", bos=None)
    assert template.render([{"role": "user", "content": "hi"}]) == "hi"


def test_load_from_a_real_checkpoint(tiny_llama_dir, tmp_path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_llama_dir))
    template = load_chat_template(tiny_llama_dir, tokenizer)
    assert template.bos_token == tokenizer.bos_token == "<s>"
    prompt = template.render([{"role": "user", "content": "What is 2 + 3?"}])
    assert prompt == "<s>User: What is 2 + 3?\nAssistant:"
    ids = tokenizer(prompt, add_special_tokens=False).input_ids
    assert ids[0] == tokenizer.bos_token_id and ids.count(tokenizer.bos_token_id) == 1
    override = tmp_path / "chatml.jinja"
    override.write_text(CHATML)
    assert load_chat_template(tiny_llama_dir, tokenizer, override).render(
        [{"role": "user", "content": "hi"}]) == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
