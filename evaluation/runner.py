"""`rho-eval run`: build prompts, generate concurrently (bounded), run tool loops, grade, write harness files.

Files (HARNESS.md §2): `<output_dir>/<data>/<split>_<type>_<n>_seed<seed>_t<temp>_s<start>_e<end>.jsonl` and
`..._<type>_metrics.json`. Finished problems are appended to `<same prefix>.partial.jsonl` as they complete, so an
interrupted run resumes: like the harness, every `.jsonl` in the data folder that starts with the prefix counts as
done (unless --overwrite).
"""
import asyncio
import json
import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from evaluation.client import ClientConfig, CompletionClient
from evaluation.data import load_data, parse_ground_truth, parse_question, read_jsonl
from evaluation.executor import ExecutorConfig
from evaluation.extract import predict
from evaluation.prompts import construct_prompt, load_demos
from evaluation.scoring import evaluate
from evaluation.tool_loop import LoopConfig, run_problem

KEPT_FIELDS = ("level", "type", "unit", "solution_type", "choices", "solution", "ques_type", "ans_type",
               "answer_type", "dataset", "subfield", "filed", "theorem", "answer")  # fmt: skip


@dataclass(frozen=True)
class RunConfig:
    """Everything `rho-eval run` is told; logged at start."""

    client: ClientConfig
    harness_dir: Path
    output_dir: Path
    data_names: tuple[str, ...] = ("gsm8k", "minerva_math")
    prompt_type: str = "cot"
    split: str = "test"
    num_test_sample: int = -1
    seed: int = 0
    start: int = 0
    end: int = -1
    max_new_tokens: int = 1024
    concurrency: int = 16
    num_exec_workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    overwrite: bool = False
    executor: ExecutorConfig = ExecutorConfig()

    def file_prefix(self) -> str:
        return f"{self.split}_{self.prompt_type}_{self.num_test_sample}_seed{self.seed}_t{0.0}"

    def out_file(self, data_name: str) -> Path:
        return self.output_dir / data_name / f"{self.file_prefix()}_s{self.start}_e{self.end}.jsonl"


def select_examples(config: RunConfig, data_name: str, rng: random.Random) -> list[dict[str, Any]]:
    examples = load_data(config.harness_dir, data_name, config.split)
    if config.num_test_sample > 0:
        examples = rng.sample(examples, config.num_test_sample)
    return examples[config.start : len(examples) if config.end == -1 else config.end]


def load_processed(config: RunConfig, data_name: str) -> list[dict[str, Any]]:
    folder = config.output_dir / data_name
    if config.overwrite or not folder.is_dir():
        return []
    samples: dict[Any, dict[str, Any]] = {}
    for path in sorted(folder.iterdir()):
        if path.name.endswith(".jsonl") and path.name.startswith(config.file_prefix()):
            samples.update({sample["idx"]: sample for sample in read_jsonl(path)})
    return list(samples.values())


def new_sample(example: dict[str, Any], data_name: str) -> dict[str, Any]:
    example = dict(example)
    example["question"] = parse_question(example, data_name)
    gt_cot, gt = parse_ground_truth(example, data_name)
    sample = {"idx": example["idx"], "question": example["question"], "gt_cot": gt_cot, "gt": gt}
    sample.update({key: example[key] for key in KEPT_FIELDS if key in example})
    return sample


async def _generate_all(config: RunConfig, data_name: str, samples: list[dict[str, Any]], partial: Path) -> None:
    demos = load_demos(config.harness_dir, data_name, config.prompt_type)
    loop_config = LoopConfig(config.prompt_type, config.max_new_tokens, config.executor)
    client = CompletionClient(config.client)
    request_slots, exec_slots = asyncio.Semaphore(config.concurrency), asyncio.Semaphore(config.num_exec_workers)
    progress = tqdm(total=len(samples), desc=f"{data_name} ({config.prompt_type})", unit="problem")

    async def solve(sample: dict[str, Any]) -> None:
        prompt = construct_prompt(sample["question"], data_name, config.prompt_type, demos)
        async with request_slots:
            code, _ = await run_problem(client, prompt, loop_config, exec_slots)
        sample.update(code=[code], pred=[predict(code, data_name)], report=[None])
        with open(partial, "a", encoding="utf-8") as handle:  # one line per finished problem: resumable
            handle.write(json.dumps(sample) + "\n")
        progress.update(1)

    try:
        await asyncio.gather(*(solve(sample) for sample in samples))
    finally:
        progress.close()
        await client.close()
        if client.num_too_long:
            print(f"rho-eval: warning: {client.num_too_long} prompts of {data_name} exceed the model's length even "
                  "with 16 new tokens; their generations are empty (vLLM's behaviour)", file=sys.stderr)


def run_data_set(config: RunConfig, data_name: str, rng: random.Random) -> dict[str, Any]:
    out_file = config.out_file(data_name)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    partial = out_file.with_name(out_file.name.removesuffix(".jsonl") + ".partial.jsonl")
    processed = load_processed(config, data_name)
    done = {sample["idx"] for sample in processed}
    samples = [new_sample(e, data_name) for e in select_examples(config, data_name, rng) if e["idx"] not in done]
    start = time.time()
    if samples:
        asyncio.run(_generate_all(config, data_name, samples, partial))
    elapsed = time.time() - start
    graded, metrics = evaluate(samples + processed, data_name, config.prompt_type, execute=True,
                               executor=config.executor)  # fmt: skip
    if len(processed) < len(graded) or not out_file.exists():
        with open(out_file, "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(sample) + "\n" for sample in graded)
    partial.unlink(missing_ok=True)
    metrics["time_use_in_second"] = elapsed
    metrics["time_use_in_minite"] = f"{int(elapsed // 60)}:{int(elapsed % 60):02d}"
    metrics_file = out_file.with_name(out_file.name.removesuffix(".jsonl") + f"_{config.prompt_type}_metrics.json")
    metrics_file.write_text(json.dumps(metrics, indent=4))
    return metrics


def run(config: RunConfig) -> dict[str, dict[str, Any]]:
    rng = random.Random(config.seed)  # the harness seeds `random` once, then samples per data set in order
    return {data_name: run_data_set(config, data_name, rng) for data_name in config.data_names}
