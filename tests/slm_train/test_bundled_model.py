"""The bundled default model (models/rho-math-tiny): size, layout, context, engine/transformers agreement on the
evaluation harness's own few-shot GSM8K prompt (tests/shared_data.py says where it is read from), and the README's
example answered correctly."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.shared_data import harness_dir

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "models" / "rho-math-tiny"
FEW_SHOT = harness_dir() / "prompts" / "cot" / "gsm8k.md"


def test_bundled_model_is_small_and_complete():
    files = {p.name: p.stat().st_size for p in MODEL.iterdir()}
    assert {"config.json", "model.safetensors", "generation_config.json", "tokenizer.json", "README.md",
            "chat_template.jinja"} <= set(files)
    assert sum(files.values()) <= 20 * 2**20
    card = (MODEL / "README.md").read_text()
    assert "Selective Language Modeling" in card and "## Evaluation (rho-eval)" in card and "GSM8K" in card


def test_bundled_model_holds_a_few_shot_prompt_and_engine_matches_transformers(make_engine):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not FEW_SHOT.exists():
        pytest.fail(f"{FEW_SHOT} is missing: check RHO_EVAL_HARNESS_DIR (tests/shared_data.py)")
    tok = AutoTokenizer.from_pretrained(MODEL)
    prompt = FEW_SHOT.read_text().strip() + "\n\n\nQuestion: Tina has 3 cookies and buys 4 more. How many cookies " \
                                            "does Tina have?\nAnswer:"
    ids = tok(prompt).input_ids
    engine = make_engine(model_id=str(MODEL))
    assert engine.checkpoint.max_position_embeddings >= 2048 > len(ids)
    ref = AutoModelForCausalLM.from_pretrained(MODEL, dtype=torch.float32).eval()
    with torch.inference_mode():
        expected = ref(torch.tensor([ids])).logits[0].float()
    got = engine.prompt_logits(ids)
    assert torch.allclose(got, expected, atol=1e-4, rtol=0), (got - expected).abs().max()


def test_bundled_model_answers_the_readme_example_through_the_engine(make_engine):
    """The README's curl example is an `arith` problem; the bundled model solves it greedily (3 * 4 + 5 = 17)."""
    from server.protocol import EngineRequest, SamplingParams

    question = "Question: Tom has 3 boxes of 4 apples and 5 loose apples. How many apples does Tom have?\\nAnswer:"
    assert question in (ROOT / "README.md").read_text()
    engine = make_engine(model_id=str(MODEL), num_threads=1)
    tok = engine.checkpoint.tokenizer
    ids = tuple(tok(question.replace("\\n", "\n")).input_ids)
    events = engine.generate([EngineRequest("r", ids, SamplingParams(max_new_tokens=48))])["r"]
    text = tok.decode([e.token_id for e in events if e.error is None], skip_special_tokens=True)
    assert text.strip() == "3 * 4 = 12. 12 + 5 = 17. The answer is 17.", text


def test_chat_template_prompt_has_the_training_tokens():
    """A chat user message renders to exactly the token ids of the training format `<s>Question: ...\\nAnswer:`."""
    from transformers import AutoTokenizer

    from router.chat_template import load_chat_template

    tok = AutoTokenizer.from_pretrained(MODEL)
    text = load_chat_template(MODEL, tok).render([{"role": "user", "content": "Tom has 3 boxes of 4 apples."}])
    assert tok(text, add_special_tokens=False).input_ids == tok("Question: Tom has 3 boxes of 4 apples.\nAnswer:").input_ids
