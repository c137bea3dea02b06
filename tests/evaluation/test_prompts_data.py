"""Prompt construction, stop sequences and data loading as the harness (HARNESS.md §3, §4, §8)."""
import pytest

from evaluation.data import load_data, parse_ground_truth, parse_question
from evaluation.errors import EvalError
from evaluation.prompts import construct_prompt, load_demos, max_func_calls, stop_words

FIRST_SHOT = ("Question: There are 15 trees in the grove. Grove workers will plant trees in the grove today. After "
              "they are done, there will be 21 trees. How many trees did the grove workers plant today?\nAnswer: "
              "There are 15 trees originally. Then there were 21 trees after some more were planted. So there must "
              "have been 21 - 15 = 6. The answer is 6.\n\n\n")  # fmt: skip


def test_cot_gsm8k_prompt(harness_dir):
    demos = load_demos(harness_dir, "gsm8k", "cot")
    prompt = construct_prompt("What is 1+1?", "gsm8k", "cot", demos)
    assert prompt.startswith(FIRST_SHOT) and prompt.endswith("\n\n\nQuestion: What is 1+1?\nAnswer:")
    assert demos.count("\n\n\n") == 8 and load_demos(harness_dir, "svamp", "cot") == demos


def test_minerva_prompt_keeps_double_backslashes(harness_dir):
    demos = load_demos(harness_dir, "minerva_math", "cot")
    assert "$\\\\frac{\\\\sqrt{x-2}}{\\\\sqrt{5-x}}$.}" in demos
    assert construct_prompt("Q?", "minerva_math", "cot", demos).endswith("Problem:\nQ?\nSolution:")


def test_zero_shot_and_program_prompts(harness_dir):
    assert construct_prompt("Q?", "gsm8k", "tora", load_demos(harness_dir, "gsm8k", "tora")) == (
        "<|user|>\nQ?\n<|assistant|>\n"
    )  # the harness's tora runs are zero-shot
    pal = construct_prompt("Q?", "gsm8k", "pal", load_demos(harness_dir, "gsm8k", "pal"))
    assert "def solution():" in pal and pal.endswith("\n\n\nQuestion: Q?")
    assert construct_prompt("Q?", "gsm8k", "direct", load_demos(harness_dir, "gsm8k", "direct")) == (
        "Question: Q?\nAnswer:"
    )
    with pytest.raises(EvalError):
        construct_prompt("Q?", "gsm8k", "socratic", "")


def test_stops_and_rounds():
    assert stop_words("cot") == ["</s>", "\n\nQuestion:", "\n\nProblem:"]
    assert stop_words("tora") == stop_words("pal") == ["</s>", "\n\n---", "```output"]
    assert (max_func_calls("cot"), max_func_calls("pal"), max_func_calls("tora")) == (1, 1, 4)


def test_data_sets_and_ground_truth(harness_dir):
    gsm8k = load_data(harness_dir, "gsm8k")
    assert len(gsm8k) == 1319 and parse_ground_truth(gsm8k[0], "gsm8k")[1] == "18"
    math500 = load_data(harness_dir, "minerva_math")
    assert len(math500) == 500 and parse_ground_truth(math500[0], "minerva_math")[1] == "(3,\\frac{\\pi}{2})"
    mathqa = load_data(harness_dir, "mathqa")
    assert [e["idx"] for e in mathqa[:3]] == [0, 1, 2]  # idx added at load
    assert "What of the following is the right choice?" in parse_question(mathqa[0], "mathqa")
    svamp = load_data(harness_dir, "svamp")
    assert parse_ground_truth(svamp[0], "svamp")[1] == parse_ground_truth(svamp[0], "svamp")[1].rstrip(".")
    with pytest.raises(EvalError, match="unknown data set"):
        load_data(harness_dir, "gsm9k")
    with pytest.raises(EvalError, match="not found"):
        load_data(harness_dir, "tabmwp")  # absent from the snapshot (HARNESS.md §8)
