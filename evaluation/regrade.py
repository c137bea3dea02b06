"""`rho-eval regrade` and `rho-eval summary`: re-extract and re-grade stored outputs; tabulate accuracies.

An output file is `<...>/<data_name>/<split>_<prompt_type>_<n>_seed<s>_t<temp>_s<start>_e<end>.jsonl` (data set
and prompt type are read from its path). A zip (such as the released outputs.zip) is read in place.
"""
import json
import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evaluation.errors import EvalError
from evaluation.executor import ExecutorConfig
from evaluation.prompts import PROMPT_TYPES
from evaluation.scoring import GRADE_TIMEOUT_S, evaluate

OUTPUT_NAME = re.compile(r"^(?P<split>[^_]+)_(?P<type>.+?)_-?\d+_seed\d+_t[\d.]+_s\d+_e-?\d+\.jsonl$")


@dataclass(frozen=True)
class OutputFile:
    name: str  # path inside the directory or zip
    data_name: str
    prompt_type: str
    samples: list[dict[str, Any]]
    stored_metrics: dict[str, Any] | None


@dataclass(frozen=True)
class RegradeResult:
    file: OutputFile
    metrics: dict[str, Any]
    pred_flips: list[Any]
    score_flips: list[Any]

    @property
    def timeout_mismatch(self) -> bool:
        """The stored metrics' timeout count differs from this grading's (where the file has one)."""
        stored = (self.file.stored_metrics or {}).get("timeout_samples")
        return stored is not None and stored != self.metrics["timeout_samples"]


def _describe(name: str) -> tuple[str, str] | None:
    parts = name.split("/")
    match = OUTPUT_NAME.match(parts[-1])
    if len(parts) < 2 or not match or match.group("type") not in PROMPT_TYPES:
        return None
    return parts[-2], match.group("type")


def _read(names: list[str], read) -> Iterator[OutputFile]:
    for name in sorted(names):
        described = _describe(name)
        if described is None:
            continue
        samples = [json.loads(line) for line in read(name).splitlines() if line.strip()]
        metrics_name = name.removesuffix(".jsonl") + f"_{described[1]}_metrics.json"
        stored = json.loads(read(metrics_name)) if metrics_name in names else None
        yield OutputFile(name, described[0], described[1], samples, stored)


def read_outputs(path: Path) -> list[OutputFile]:
    path = Path(path)
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            return list(_read(archive.namelist(), lambda n: archive.read(n).decode("utf-8")))
    if path.is_dir():
        names = [p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()]
        return list(_read(names, lambda n: (path / n).read_text(encoding="utf-8")))
    raise EvalError(f"{path} is neither an output directory nor a zip file")


def regrade_file(output: OutputFile, num_workers: int | None = None, executor: ExecutorConfig | None = None,
                 grade_timeout_s: float = GRADE_TIMEOUT_S) -> RegradeResult:  # fmt: skip
    stored = {sample["idx"]: sample for sample in output.samples}
    fresh = [{k: v for k, v in sample.items() if k not in ("score",)} for sample in output.samples]
    graded, metrics = evaluate(fresh, output.data_name, output.prompt_type, execute=True, executor=executor,
                               num_workers=num_workers, grade_timeout_s=grade_timeout_s)  # fmt: skip
    pred_flips = [s["idx"] for s in graded if "pred" in stored[s["idx"]] and s["pred"] != stored[s["idx"]]["pred"]]
    score_flips = [s["idx"] for s in graded if "score" in stored[s["idx"]] and s["score"] != stored[s["idx"]]["score"]]
    return RegradeResult(output, metrics, pred_flips, score_flips)


def format_regrade(results: list[RegradeResult]) -> str:
    rows = [("file", "acc", "stored acc", "n", "timeouts", "stored timeouts", "pred flips", "score flips")]
    for r in results:
        stored = r.file.stored_metrics or {}
        rows.append((r.file.name, f"{r.metrics['acc']:.1f}", str(stored.get("acc", "-")), str(r.metrics["num_samples"]),
                     str(r.metrics["timeout_samples"]), str(stored.get("timeout_samples", "-")),
                     str(len(r.pred_flips)), str(len(r.score_flips))))  # fmt: skip
    return _table(rows)


def _table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def summary_table(path: Path) -> str:
    """Per-run (folder holding the data folders) accuracy per data set and their plain average."""
    path = Path(path)
    if not path.is_dir():
        raise EvalError(f"{path} is not a directory")
    runs: dict[tuple[str, str], dict[str, float]] = {}
    for metrics_file in sorted(path.rglob("*_metrics.json")):
        described = _describe(metrics_file.parent.name + "/" + re.sub(r"_[^_/]+_metrics\.json$", ".jsonl",
                                                                       metrics_file.name))  # fmt: skip
        if described is None:
            continue
        run = metrics_file.parent.parent.relative_to(path).as_posix() or "."
        acc = json.loads(metrics_file.read_text())["acc"]
        runs.setdefault((run, described[1]), {})[described[0]] = acc
    if not runs:
        raise EvalError(f"no *_metrics.json files under {path}")
    data_names = sorted({name for accs in runs.values() for name in accs})
    rows = [("run", "type", *data_names, "avg")]
    for (run, prompt_type), accs in sorted(runs.items()):
        cells = [f"{accs[name]:.1f}" if name in accs else "-" for name in data_names]
        rows.append((run, prompt_type, *cells, f"{sum(accs.values()) / len(accs):.1f}"))
    return _table(rows)
