"""`rho-eval` command line: run, regrade, summary, setup-latex, sandbox-info. User errors exit 2 with a message."""
import argparse
import json
import os
import sys
from pathlib import Path

from evaluation.client import ClientConfig
from evaluation.errors import EvalError
from evaluation.executor import ExecutorConfig


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"not JSON: {error}") from error
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return value


def _add_run(commands) -> None:
    run = commands.add_parser("run", help="generate against an endpoint, grade, write harness output files")
    run.add_argument("--endpoint", required=True, help="server base URL, e.g. http://127.0.0.1:3000")
    run.add_argument("--api", choices=("tgi", "openai"), default="tgi", help="POST /generate or /v1/completions")
    run.add_argument("--api-key", default=os.environ.get("RHO_EVAL_API_KEY"), help="Bearer token (env RHO_EVAL_API_KEY)")
    run.add_argument("--model", default="default", help="the OpenAI 'model' field")
    run.add_argument("--harness-dir", type=Path, required=True, help="folder with data/ and prompts/")
    run.add_argument("--data", default="gsm8k,minerva_math", help="comma-separated data sets")
    run.add_argument("--prompt-type", default="cot", help="cot | pal | tora (or direct, self-instruct, ...)")
    run.add_argument("--output-dir", type=Path, default=Path("math_eval"))
    run.add_argument("--split", default="test")
    run.add_argument("--num-test-sample", type=int, default=-1, help="random sample of this many (-1: all)")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--start", type=int, default=0)
    run.add_argument("--end", type=int, default=-1)
    run.add_argument("--max-tokens", type=int, default=1024, help="tokens per generation call (harness: 1024)")
    run.add_argument("--concurrency", type=int, default=16, help="requests in flight")
    run.add_argument("--overwrite", action="store_true", help="ignore earlier outputs instead of resuming")
    run.add_argument("--extra-params", type=_json_object, default=None,
                     help='JSON merged into each request\'s parameters, e.g. \'{"repetition_penalty": 1.0}\'')
    run.add_argument("--exec-timeout", type=float, default=5.0, help="seconds per program (harness: 5)")
    run.add_argument("--exec-memory-mb", type=int, default=4096, help="address-space limit per program")
    _add_unsafe(run)


def _add_unsafe(command) -> None:
    command.add_argument("--unsafe-executor", action="store_true",
                         help="run model code and grade model answers without namespaces (only where the kernel "
                              "refuses user namespaces; see `rho-eval sandbox-info`)")  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rho-eval", description="Rho-1 math evaluation harness, against a server")
    commands = parser.add_subparsers(dest="command", required=True)
    _add_run(commands)
    regrade = commands.add_parser("regrade", help="re-extract and re-grade stored outputs (directory or zip)")
    regrade.add_argument("path", type=Path)
    regrade.add_argument("--workers", type=int, default=None, help="grading processes (default: all cores)")
    regrade.add_argument("--grade-timeout", type=float, default=3.0,
                         help="seconds per item before it counts as wrong (harness: 3; raise it on a loaded machine)")
    regrade.add_argument("--check", action="store_true",
                         help="exit 1 if any stored pred, score or timeout count differs (needs `setup-latex`)")
    _add_unsafe(regrade)
    summary = commands.add_parser("summary", help="accuracy table from *_metrics.json files")
    summary.add_argument("path", type=Path)
    commands.add_parser("setup-latex", help="install antlr 4.11 privately for sympy's LaTeX parser (exact grading)")
    commands.add_parser("sandbox-info", help="which isolation layers the executor has on this machine")
    return parser


def _run(args: argparse.Namespace) -> int:
    from evaluation.prompts import PROMPT_TYPES
    from evaluation.runner import RunConfig, run

    if args.prompt_type not in PROMPT_TYPES:
        raise EvalError(f"unknown --prompt-type {args.prompt_type!r}; known: {', '.join(PROMPT_TYPES)}")
    if args.max_tokens < 1 or args.concurrency < 1:
        raise EvalError("--max-tokens and --concurrency must be positive")
    client = ClientConfig(args.endpoint, args.api, args.api_key, args.model, extra_parameters=args.extra_params)
    executor = ExecutorConfig(timeout_s=args.exec_timeout, memory_bytes=args.exec_memory_mb << 20,
                              unsafe=args.unsafe_executor)  # fmt: skip
    _require_sandbox(args.unsafe_executor)
    config = RunConfig(client=client, harness_dir=args.harness_dir, output_dir=args.output_dir,
                       data_names=tuple(d for d in args.data.split(",") if d), prompt_type=args.prompt_type,
                       split=args.split, num_test_sample=args.num_test_sample, seed=args.seed, start=args.start,
                       end=args.end, max_new_tokens=args.max_tokens, concurrency=args.concurrency,
                       overwrite=args.overwrite, executor=executor)  # fmt: skip
    shown = {**config.__dict__, "client": {**client.__dict__, "api_key": "***" if client.api_key else None}}
    print(f"rho-eval run: {shown}", file=sys.stderr)
    results = run(config)
    names = list(results)
    print("\t".join([*names, "avg"]))
    accs = [results[name]["acc"] for name in names]
    print("\t".join(f"{acc:.1f}" for acc in [*accs, sum(accs) / len(accs)]))
    return 0


def _regrade(args: argparse.Namespace) -> int:
    from evaluation.regrade import format_regrade, read_outputs, regrade_file

    outputs = read_outputs(args.path)
    if not outputs:
        raise EvalError(f"no harness output files (<data>/<split>_<type>_..._e<end>.jsonl) in {args.path}")
    if args.check and not _exact_latex_available():
        raise EvalError("--check needs the harness's exact LaTeX parser (sympy's parse_latex on antlr 4.11), which "
                        "is missing, so some symbolic answers would grade differently; run `rho-eval setup-latex` "
                        "once (or set RHO_EVAL_ANTLR_DIR)")  # fmt: skip
    _require_sandbox(args.unsafe_executor)
    executor = ExecutorConfig(unsafe=args.unsafe_executor)
    results = [regrade_file(output, args.workers, executor, args.grade_timeout) for output in outputs]
    print(format_regrade(results))
    flipped = any(r.pred_flips or r.score_flips for r in results)
    if args.check and any(r.timeout_mismatch for r in results):
        # A timeout is the grading machine's speed, not the grader's logic: an item near the limit (a 1,000-digit
        # decimal through antlr's pure-Python parser takes 4-6 s here, under 3 s on the harness's machine) times out
        # on one machine and not on another. It only fails the check when it changes a score (a score flip).
        print("rho-eval: note: timeout counts differ from the stored metrics (table above) without changing any "
              f"score; items near the {args.grade_timeout:g} s limit depend on this machine's speed "
              "(--grade-timeout raises it)", file=sys.stderr)  # fmt: skip
    return 1 if args.check and flipped else 0


def _require_sandbox(unsafe: bool) -> None:
    from evaluation.sandbox import require_namespaces

    if unsafe:
        print("rho-eval: warning: --unsafe-executor: model-written code and answers run without namespaces "
              "(rlimits, no_new_privs and seccomp only)", file=sys.stderr)  # fmt: skip
    else:
        require_namespaces()


def _exact_latex_available() -> bool:
    from evaluation.latex_antlr import antlr_dir

    return (antlr_dir() / "antlr4" / "__init__.py").is_file()


def _warn_if_inexact() -> None:
    if not _exact_latex_available():
        print("rho-eval: warning: sympy's LaTeX parser is unavailable (antlr 4.11 missing), so a few symbolic "
              "answers grade differently from the harness; run `rho-eval setup-latex` once", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in ("run", "regrade"):
        _warn_if_inexact()
    try:
        if args.command == "run":
            return _run(args)
        if args.command == "regrade":
            return _regrade(args)
        if args.command == "summary":
            from evaluation.regrade import summary_table

            print(summary_table(args.path))
        elif args.command == "setup-latex":
            from evaluation.latex_antlr import install_antlr

            print(f"antlr 4.11 runtime in {install_antlr()}")
        elif args.command == "sandbox-info":
            from evaluation.executor import describe

            print(json.dumps(describe(), indent=2))
        return 0
    except EvalError as error:
        print(f"rho-eval: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
