"""Client-side logic of `rho-eval run` against a scripted HTTP server on loopback: stop cutting, Bearer auth,
retries on 429, length back-off on 422, both APIs, the tora loop with the executor, resume, output files."""
import json
import re

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from evaluation.cli import main
from evaluation.data import load_data

from tests.live_server import LiveServer

KEY = "fake-key"


class FakeModel:
    """Answers GSM8K questions from the gold answers (right for even idx), speaking like the harness's models."""

    def __init__(self, harness_dir):
        self.gold = {e["question"]: (e["idx"], e["answer"].split("####")[1].strip()) for e in
                     load_data(harness_dir, "gsm8k")[:12]}  # fmt: skip
        self.requests: list[dict] = []
        self.fail_first_with_429 = True

    def is_too_long(self, prompt: str) -> bool:
        """Problem 5's prompt does not fit the fake model at all."""
        question = prompt.rsplit("Question: ", 1)[-1].removesuffix("\nAnswer:")
        return self.gold.get(question, (None,))[0] == 5

    def reply(self, prompt: str, max_tokens: int) -> str:
        if prompt.startswith("<|user|>"):  # tora: one program round, then a boxed answer
            if prompt.rstrip().endswith("```"):
                number = re.findall(r"```output\n(.*?)\n```", prompt)[-1]
                return f" So the result is \\boxed{{{number}}}.\n\n---junk"
            return "Let me compute.\n```python\nprint(6 * 7)\n```\n```output\nfake"
        question = prompt.rsplit("Question: ", 1)[1].removesuffix("\nAnswer:")
        idx, answer = self.gold[question]
        said = answer if idx % 2 == 0 else "-1"
        return f" Some reasoning. The answer is {said}.\n\nQuestion: a hallucinated next question"


def make_app(model: FakeModel) -> Starlette:
    async def generate(request: Request):
        if request.headers.get("authorization") != f"Bearer {KEY}":
            return JSONResponse({"error": "Unauthorized", "error_type": "authentication"}, status_code=401)
        body = await request.json()
        model.requests.append(body)
        if model.fail_first_with_429:
            model.fail_first_with_429 = False
            return JSONResponse({"error": "Model is overloaded", "error_type": "overloaded"}, status_code=429)
        params = body["parameters"]
        if params["max_new_tokens"] > 256 or model.is_too_long(body["inputs"]):
            return JSONResponse({"error": "Input validation error: `inputs` tokens + `max_new_tokens` must be <= 300",
                                 "error_type": "validation"}, status_code=422)  # fmt: skip
        return JSONResponse({"generated_text": model.reply(body["inputs"], params["max_new_tokens"])})

    async def completions(request: Request):
        body = await request.json()
        model.requests.append(body)
        text = model.reply(body["prompt"], body["max_tokens"])
        cut = min([text.index(s) for s in body["stop"] if s in text], default=len(text))
        return JSONResponse({"choices": [{"index": 0, "text": text[:cut], "finish_reason": "stop"}]})

    return Starlette(routes=[Route("/generate", generate, methods=["POST"]),
                             Route("/v1/completions", completions, methods=["POST"])])  # fmt: skip


@pytest.fixture()
def fake(harness_dir):
    model = FakeModel(harness_dir)
    with LiveServer(make_app(model)) as live:
        yield live, model


def _run(live, harness_dir, out, *extra):
    argv = ["run", "--endpoint", live.url, "--api-key", KEY, "--harness-dir", str(harness_dir), "--data", "gsm8k",
            "--output-dir", str(out), "--max-tokens", "1024", *extra]  # fmt: skip
    return main(argv)


def test_cot_run_writes_harness_files(fake, harness_dir, tmp_path):
    live, model = fake
    assert _run(live, harness_dir, tmp_path, "--end", "6") == 0
    out = tmp_path / "gsm8k" / "test_cot_-1_seed0_t0.0_s0_e6.jsonl"
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["idx"] for r in rows] == list(range(6))
    assert list(rows[0]) == ["idx", "question", "gt_cot", "gt", "answer", "code", "pred", "report", "score"]
    assert rows[0]["code"] == ["Some reasoning. The answer is 18."]  # TGI keeps the stop text; cut here
    assert [r["score"] for r in rows] == [[i % 2 == 0] for i in range(6)]
    assert rows[5]["code"] == [""] and rows[5]["pred"] == [None]  # too long even for 16 tokens: empty, as vLLM
    metrics = json.loads((tmp_path / "gsm8k" / "test_cot_-1_seed0_t0.0_s0_e6_cot_metrics.json").read_text())
    assert metrics["acc"] == 50.0 and metrics["num_samples"] == 6 and "time_use_in_second" in metrics
    assert metrics["empty_samples"] == 1
    first = model.requests[1]
    assert first["parameters"]["stop"] == ["</s>", "\n\nQuestion:", "\n\nProblem:"]
    assert first["parameters"]["do_sample"] is False
    assert first["inputs"].startswith("Question: There are 15 trees in the grove.")
    budgets = {r["parameters"]["max_new_tokens"] for r in model.requests}
    assert budgets == {1024, 512, 256, 128, 64, 32, 16}  # halved after each 422 until it fits (or 16)
    assert not list((tmp_path / "gsm8k").glob("*.partial.jsonl"))


def test_resume_skips_finished_problems(fake, harness_dir, tmp_path):
    live, model = fake
    folder = tmp_path / "gsm8k"
    folder.mkdir()
    partial = folder / "test_cot_-1_seed0_t0.0_s0_e4.partial.jsonl"
    done = {"idx": 0, "question": "q", "gt_cot": "c", "gt": "18", "code": ["The answer is 18."]}
    partial.write_text(json.dumps(done) + "\n")  # an interrupted run finished problem 0
    assert _run(live, harness_dir, tmp_path, "--end", "4") == 0
    asked = {r["inputs"].rsplit("Question: ", 1)[1] for r in model.requests if r["parameters"]["max_new_tokens"] <= 256}
    assert len(asked) == 3  # problems 1-3 only
    rows = [json.loads(line) for line in (folder / "test_cot_-1_seed0_t0.0_s0_e4.jsonl").read_text().splitlines()]
    assert [r["idx"] for r in rows] == [0, 1, 2, 3] and rows[0]["score"] == [True]
    assert not partial.exists()


def test_openai_api_and_tora_loop_with_executor(fake, harness_dir, tmp_path):
    live, model = fake
    argv = ["--api", "openai", "--prompt-type", "tora", "--end", "2"]
    assert _run(live, harness_dir, tmp_path, *argv) == 0
    rows = [json.loads(line) for line in (tmp_path / "gsm8k" / "test_tora_-1_seed0_t0.0_s0_e2.jsonl").open()]
    code = rows[0]["code"][0]
    assert code.startswith("Let me compute.\n```python\nprint(6 * 7)\n```\n```output\n42\n```")
    assert code.endswith("So the result is \\boxed{42}.") and rows[0]["pred"] == ["42"]
    assert model.requests[0]["stop"] == ["</s>", "\n\n---", "```output"]
    assert model.requests[0]["prompt"].startswith("<|user|>\n")


def test_user_errors_exit_2_with_a_message(fake, harness_dir, tmp_path, capsys):
    live, _ = fake
    assert _run(live, harness_dir, tmp_path, "--data", "nope") == 2
    assert "unknown data set 'nope'" in capsys.readouterr().err
    assert main(["run", "--endpoint", live.url, "--harness-dir", str(harness_dir), "--end", "1",
                 "--output-dir", str(tmp_path), "--data", "gsm8k"]) == 2  # fmt: skip
    assert "answered 401" in capsys.readouterr().err
    assert main(["regrade", str(tmp_path / "missing")]) == 2
    assert _run(live, harness_dir, tmp_path, "--prompt-type", "socratic") == 2
