"""Prompt construction, stop sequences and round limits as the harness (HARNESS.md §3-§4).

Few-shot demos are read byte-exact from `<harness_dir>/prompts/<type>/<file>.md`, stripped, plus "\\n\\n\\n".
"""
import sys
from pathlib import Path

from evaluation.errors import EvalError

PROMPT_TYPES = ("direct", "cot", "pal", "tora", "self-instruct", "deepseek-math", "wizard_zs", "kpmath")
MATH_STYLE = ("minerva_math", "math", "math_oai", "mmlu_stem", "sat_math", "mathqa", "hungarian_exam")
_DEMO_FILE = {"gsm_hard": "gsm8k", "svamp": "gsm8k", "tabmwp": "gsm8k", "asdiv": "gsm8k", "mawps": "gsm8k",
              "math_oai": "math", "hungarian_exam": "math", "sat_math": "mmlu_stem"}  # fmt: skip
_TEMPLATES = {
    "tora": "<|user|>\n{q}\n<|assistant|>\n",
    "self-instruct": "<|user|>\n{q}\n<|assistant|>\n",
    "deepseek-math": "User: {q}\nPlease reason step by step, and put your final answer within \\boxed{{}}.\n\nAssistant:",
    "wizard_zs": "Below is an instruction that describes a task. Write a response that appropriately completes the "
    "request.\n\n### Instruction:\n{q}\n\n### Response: Let's think step by step.",
    "kpmath": 'User: Please reason step by step and put your final answer at the end with "The answer is: ".\n\n'
    "{q}\n\nAssistant:",
}


def load_demos(harness_dir: Path, data_name: str, prompt_type: str) -> str:
    if prompt_type not in ("cot", "pal"):
        return ""  # `direct` is zero-shot; the harness's base-model tora type is broken (HARNESS.md §3)
    prompts = Path(harness_dir) / "prompts"
    name = _DEMO_FILE.get(data_name, data_name)
    path = prompts / prompt_type / f"{name}.md"
    if not path.is_file():
        path = prompts / f"{prompt_type}.md"
    if not path.is_file():  # the harness prints an error and goes on zero-shot (e.g. ocw)
        print(f"rho-eval: warning: no {prompt_type} demos for {data_name} ({path} missing): zero-shot", file=sys.stderr)
        return ""
    return path.read_text(encoding="utf-8").strip() + "\n\n\n"


def construct_prompt(question: str, data_name: str, prompt_type: str, demos: str) -> str:
    if prompt_type in ("direct", "cot"):
        if data_name in MATH_STYLE:
            return demos + f"Problem:\n{question}\nSolution:"
        return demos + f"Question: {question}\nAnswer:"
    if prompt_type == "pal":
        return demos + f"Question: {question}"
    if prompt_type in _TEMPLATES:
        return _TEMPLATES[prompt_type].format(q=question)
    raise EvalError(f"unknown prompt type {prompt_type!r}; known: {', '.join(PROMPT_TYPES)}")


def stop_words(prompt_type: str) -> list[str]:
    stops = ["</s>"]
    if prompt_type == "cot":
        stops += ["\n\nQuestion:", "\n\nProblem:"]
    if prompt_type in ("pal", "tora"):
        stops += ["\n\n---", "```output"]
    elif prompt_type == "wizard_zs":
        stops += ["Instruction", "Response"]
    return stops


def max_func_calls(prompt_type: str) -> int:
    return 1 if prompt_type in ("cot", "pal") else 4
