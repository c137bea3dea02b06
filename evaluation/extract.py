"""Prediction extraction from a generation, exactly as the harness's `extract_answer` (HARNESS.md §6)."""
import re

from evaluation.normalize import strip_string

MULTI_CHOICE_DATA = ("mmlu_stem", "sat_math", "mathqa")
_CHOICE = re.compile(r"answer is \(?(?P<ans>[abcde])\)?")
_NUMBER = re.compile(r"-?\d*\.?\d+")


def extract_multi_choice(text: str) -> str:
    text = text.split("Problem:", 1)[0].replace("choice is", "answer is")
    match = _CHOICE.search(text.lower())
    return match.group("ans").upper() if match else "placeholder"


def last_boxed(text: str) -> str:
    """Content of the last `boxed{...}` (brace-matched; unclosed runs to the end), or up to `$` without a brace."""
    tail = text.split("boxed")[-1]
    if not tail.startswith("{"):
        return tail.split("$")[0].strip()
    depth, content = 1, []
    for char in tail[1:]:
        depth += {"{": 1, "}": -1}.get(char, 0)
        if depth == 0:
            break
        content.append(char)
    return "".join(content)


def _raw_answer(text: str) -> str | None:
    """The answer text before clean-up; None where the harness returns "" at once ("boxed" ends the text)."""
    if "final answer is $" in text and "$. I hope" in text:  # Minerva's answer sentence
        return text.split("final answer is $", 1)[1].split("$. I hope", 1)[0].strip()
    if "boxed" in text:
        return last_boxed(text) if text.split("boxed")[-1] else None
    if "he answer is" in text:
        return text.split("he answer is")[-1].strip()
    if "final answer is" in text:
        return text.split("final answer is")[-1].strip()
    numbers = _NUMBER.findall(text.replace(",", ""))
    return numbers[-1] if numbers else ""


def extract_answer(text: str, data_name: str) -> str:
    if data_name in MULTI_CHOICE_DATA:
        return extract_multi_choice(text)
    raw = _raw_answer(text)
    if raw is None:
        return ""
    answer = re.sub(r"\n\s*", "", raw)
    if answer.startswith(":"):
        answer = answer[1:]
    if answer.endswith("."):
        answer = answer[:-1]
    if answer.endswith("/"):
        answer = answer[:-1]
    return strip_string(answer)


def predict(code: str | None, data_name: str) -> str | None:
    """The stored `pred` for cot/tora outputs: `run_execute` -> strip_string(extract_answer(code)).

    Empty generations get None, as the harness's `run_execute` returns (None, None) for them.
    """
    if not code or code == "error":
        return None
    return strip_string(extract_answer(code, data_name))
