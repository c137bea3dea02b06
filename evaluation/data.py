"""Data sets of a harness directory: loading, question text and ground truth (HARNESS.md §3, §6, §8).

`minerva_math` reads `data/math_oai` (MATH-500). Only local jsonl files are read: a missing file is a typed error,
never a download.
"""
import ast
import json
import re
from pathlib import Path
from typing import Any

from evaluation.errors import EvalError
from evaluation.normalize import strip_string
from evaluation.extract import extract_answer

MATH_LIKE = ("math", "math_oai", "minerva_math", "ocw", "amps", "hungarian_exam")
DATA_NAMES = (
    "gsm8k", "minerva_math", "math", "math_oai", "gsm_hard", "svamp", "asdiv", "mawps", "tabmwp",
    "mathqa", "mmlu_stem", "sat_math", "ocw", "hungarian_exam",
)  # fmt: skip
_DATA_DIR_ALIAS = {"minerva_math": "math_oai"}


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def load_data(harness_dir: Path, data_name: str, split: str = "test") -> list[dict[str, Any]]:
    """Examples sorted by `idx` (row number where the file has none)."""
    if data_name not in DATA_NAMES:
        raise EvalError(f"unknown data set {data_name!r}; known: {', '.join(DATA_NAMES)}")
    path = Path(harness_dir) / "data" / _DATA_DIR_ALIAS.get(data_name, data_name) / f"{split}.jsonl"
    if not path.is_file():
        raise EvalError(f"data file {path} not found (the harness directory needs data/<name>/{split}.jsonl)")
    examples = read_jsonl(path)
    if examples and "idx" not in examples[0]:
        examples = [{"idx": i, **example} for i, example in enumerate(examples)]
    return sorted(examples, key=lambda example: example["idx"])


def _tabmwp_answer(example: dict[str, Any]) -> Any:
    answer = example["answer"]
    if example["ans_type"] not in ("integer_number", "decimal_number"):
        return answer
    if "/" in answer:
        numerator, denominator = answer.split("/")[:2]
        return int(numerator) / int(denominator)
    if "," in answer:
        return float(answer.replace(",", ""))
    if "%" in answer:
        return float(answer.split("%")[0]) / 100
    return float(answer)


def _raw_ground_truth(example: dict[str, Any], data_name: str) -> tuple[Any, Any]:
    if data_name in MATH_LIKE:
        return example["solution"], extract_answer(example["solution"], data_name)
    if data_name == "mathqa":
        return example["rationale"], example["correct"].upper()
    if data_name == "gsm8k":
        cot, answer = example["answer"].split("####")
        return cot, answer
    table = {
        "gsm_hard": ("code", "target"), "svamp": ("Equation", "Answer"), "mawps": (None, "target"),
        "sat_math": (None, "Answer"), "asdiv": ("formula", None), "tabmwp": ("solution", None),
        "mmlu_stem": (None, None),
    }  # fmt: skip
    if data_name not in table:
        raise EvalError(f"no ground-truth rule for data set {data_name!r}")
    cot_key, answer_key = table[data_name]
    cot = example[cot_key] if cot_key else None
    if data_name == "asdiv":
        return cot, re.sub(r"\(.*?\)", "", example["answer"])
    if data_name == "tabmwp":
        return cot, _tabmwp_answer(example)
    if data_name == "mmlu_stem":
        return cot, "ABCD"[example["answer"]]
    return cot, example[answer_key]


def parse_ground_truth(example: dict[str, Any], data_name: str) -> tuple[str, str]:
    """(gt_cot, gt). Stored samples (with `gt_cot` and `gt`) are re-normalized, as the harness's evaluate does."""
    if "gt_cot" in example and "gt" in example:
        if data_name in ("math", "math_oai", "ocw", "amps", "hungarian_exam"):
            return example["gt_cot"], extract_answer(example["gt_cot"], data_name)
        return example["gt_cot"], strip_string(example["gt"])
    cot, answer = _raw_ground_truth(example, data_name)
    return str(cot).strip(), strip_string(answer)


def _choices_question(stem: str, options: str) -> str:
    return f"{stem.strip()}\nWhat of the following is the right choice? Explain your answer.\n{options.strip()}"


def _mathqa_question(example: dict[str, Any]) -> str:
    problem = example["problem"][0].upper() + example["problem"][1:]
    options = example["options"].strip()
    if options[0] == "[":
        options = ", ".join(ast.literal_eval(options))
    for letter in "abcde":
        if f"{letter} ) " in options:
            options = re.sub(f"{letter} \\) {letter} \\) ", f"{letter} ) ", options)
            options = re.sub(f"{letter} \\) ", f"({letter.upper()}) ", options)
    return _choices_question(problem, options.replace(" , ", ", "))


def _sat_question(example: dict[str, Any]) -> str:
    options = "(" + example["options"].strip()
    for letter in "BCD":
        options = options.replace(f" {letter}) ", f" ({letter}) ")
    return _choices_question(example["question"], options)


def _tabmwp_question(example: dict[str, Any]) -> str:
    title = f'regarding "{example["table_title"]}" ' if example["table_title"] else ""
    question = f'Read the following table {title}and answer a question:\n{example["table"]}\n{example["question"]}'
    if example["choices"]:
        question += f" Please select from the following options: {example['choices']}"
    return question


def _question_text(example: dict[str, Any], data_name: str) -> str:
    if data_name == "asdiv":
        return f"{example['body'].strip()} {example['question'].strip()}"
    if data_name == "svamp":
        body = example["Body"].strip()
        return f"{body if body.endswith('.') else body + '.'} {example['Question'].strip()}"
    if data_name == "tabmwp":
        return _tabmwp_question(example)
    if data_name == "mmlu_stem":
        options = ", ".join(f"({label}) {str(option).strip()}" for label, option in zip("ABCD", example["choices"]))
        return _choices_question(example["question"], options)
    if data_name == "sat_math":
        return _sat_question(example)
    if data_name == "mathqa":
        return _mathqa_question(example)
    return next((example[key] for key in ("question", "problem", "Question", "input") if key in example), "")


def parse_question(example: dict[str, Any], data_name: str) -> str:
    question = _question_text(example, data_name)
    if not question:
        raise EvalError(f"example {example.get('idx')} of {data_name} has no question field")
    answer = parse_ground_truth(example, data_name)[1].lower()
    if answer in ("true", "false"):
        question += " (True or False)"
    if answer in ("yes", "no"):
        question += " (Yes or No)"
    return question.strip()
