"""Served for real: a model folder with its own chat_template.jinja and a `--chat-template` file given to the
launcher (RouterConfig.chat_template), which wins; a template that refuses the messages answers 422
`Template error: ...` to the openai SDK."""
from __future__ import annotations

import shutil

import openai
import pytest

from tests.router.conftest import LiveServer

TEMPLATE = ("{{ bos_token }}{% for m in messages %}"
            "{% if m.role == 'system' %}{{ raise_exception('system messages are not supported') }}{% endif %}"
            "<|{{ m.role }}|>{{ m.content }}{{ eos_token }}{% endfor %}"
            "{% if add_generation_prompt %}<|assistant|>{% endif %}")


@pytest.fixture(scope="module")
def templated_server(tiny_llama_dir, tmp_path_factory, make_client):
    from router.app import create_app
    from router.config import RouterConfig

    folder = tmp_path_factory.mktemp("templated") / "model"
    shutil.copytree(tiny_llama_dir, folder)
    (folder / "chat_template.jinja").write_text("{{ raise_exception('the override should have won') }}")
    override = folder.parent / "override.jinja"
    override.write_text(TEMPLATE)
    client = make_client(model_id=str(folder))
    with LiveServer(create_app(client, RouterConfig(chat_template=str(override)))) as live:
        yield live
    client.shutdown()


def test_model_template_is_used_and_its_errors_are_422(templated_server, tiny_llama_dir):
    from transformers import AutoTokenizer

    client = openai.OpenAI(base_url=f"{templated_server.url}/v1", api_key="unused", max_retries=0)
    completion = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "2+2?"}],
                                                max_tokens=2)
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_llama_dir))
    expected = "<s><|user|>2+2?</s><|assistant|>"
    assert completion.usage.prompt_tokens == len(tokenizer(expected, add_special_tokens=False).input_ids)
    with pytest.raises(openai.UnprocessableEntityError) as info:
        client.chat.completions.create(model="tiny", max_tokens=2, messages=[
            {"role": "system", "content": "x"}, {"role": "user", "content": "2+2?"}])
    assert info.value.body["message"] == "Template error: system messages are not supported"
    assert info.value.body["type"] == "template_error"
