"""One problem's generation loop (HARNESS.md §5): generate, maybe run the cumulative program, append its output.

cot: one generation. pal: one generation, its program's `solution()` appended as a \\boxed{} output block.
tora (and the other SFT types): up to 4 rounds; a round that ends by closing a ```python block (and has no
"boxed") runs the program and appends "\\n```output\\n{result or error}\\n```\\n"; the 4th round appends
"\\nReach max function call limit." and ends without a further generation.
"""
import asyncio
from dataclasses import dataclass

from evaluation.executor import ExecResult, ExecutorConfig, execute
from evaluation.normalize import strip_string
from evaluation.prompts import max_func_calls, stop_words
from evaluation.trajectory import extract_program

PAL_ANSWER_EXPR = "solution()"


@dataclass(frozen=True)
class LoopConfig:
    prompt_type: str
    max_new_tokens: int = 1024  # the harness's --max_tokens_per_call
    executor: ExecutorConfig = ExecutorConfig()


async def run_program(code: str, mode: str, config: ExecutorConfig, slots: asyncio.Semaphore) -> ExecResult:
    async with slots:  # bounded: each execution is a process
        return await asyncio.to_thread(execute, code, mode, config)


async def run_problem(client, prompt: str, config: LoopConfig, exec_slots: asyncio.Semaphore) -> tuple[str, int]:
    """(code, number of executions): `code` is the transcript after the prompt, as the harness stores it."""
    query, num_executions = prompt, 0
    rounds, stops = max_func_calls(config.prompt_type), stop_words(config.prompt_type)
    for round_index in range(rounds):
        output = (await client.complete(query, config.max_new_tokens, stops)).rstrip()
        query += output
        if config.prompt_type == "cot":
            break
        if config.prompt_type == "pal":
            program, mode = (extract_program(query) if "```python" in output else output), PAL_ANSWER_EXPR
        elif "boxed" not in output and output.endswith("```"):
            program, mode = extract_program(query), "stdout"
        else:
            break
        result = await run_program(program, mode, config.executor, exec_slots)
        num_executions += 1
        shown = result.result or result.report
        if config.prompt_type == "pal":
            shown = "\\boxed{" + shown + "}"
        query += f"\n```output\n{shown}\n```\n"
        if round_index == rounds - 1:
            query += "\nReach max function call limit."
    return query.split(prompt)[-1].strip(), num_executions


def pal_prediction(code: str, executor: ExecutorConfig | None = None) -> tuple[str | None, str | None]:
    """pal's graded prediction: re-run the program in `code` and take `solution()` (the harness's evaluate)."""
    if not code or code == "error":
        return None, None
    result = execute(extract_program(code), PAL_ANSWER_EXPR, executor or ExecutorConfig())
    return strip_string(result.result), result.report
