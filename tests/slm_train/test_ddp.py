"""DDP with torchrun on CPU (gloo): 2 processes against 1 process on the same global batch.

Documented behaviour (train.py): causal LM and SLM with rank_scope=global train exactly like one process on the
global batch (float tolerance); rank_scope=local selects ceil(ratio * tokens) on each rank's own rows instead.
"""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from slm_train import checkpoint
from slm_train.config import ScoreConfig
from slm_train.score import score
from slm_train.train import train
from tests.slm_train.conftest import toy_train_config

ROOT = Path(__file__).resolve().parents[2]


def _log(out: Path) -> list[dict]:
    return [r for r in map(json.loads, (out / "log.jsonl").read_text().splitlines()) if "loss" in r]


def _max_diff(a: Path, b: Path) -> float:
    sa, sb = checkpoint.load(a / "ckpt.pt")["model"], checkpoint.load(b / "ckpt.pt")["model"]
    return max(float((sa[k] - sb[k]).abs().max()) for k in sa)


@pytest.fixture(scope="module")
def runs(toy_corpora, tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    ref = train(toy_train_config(data_dir=str(toy_corpora.clean), out_dir=str(root / "ref"), max_tokens=8 * 64 * 2,
                                 eval_every=0))
    scores = score(ScoreConfig(data_dir=str(toy_corpora.noisy), ckpt=str(ref), out_dir=str(root / "scores"),
                               num_threads=1))
    common = dict(data_dir=str(toy_corpora.noisy), scores_dir=str(scores), eval_every=0, max_tokens=8 * 64 * 4,
                  grad_accum=2, seed=3)
    arms = {"clm": dict(mode="clm"), "slm": dict(mode="slm", ratio=0.5),
            "local": dict(mode="slm", ratio=0.5, rank_scope="local")}
    two = {name: toy_train_config(out_dir=str(root / f"{name}2"), **common, **kw) for name, kw in arms.items()}
    spec = root / "configs.json"
    spec.write_text(json.dumps([dataclasses.asdict(c) for c in two.values()]))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "tests.slm_train.ddp_worker", str(spec)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("clm", "slm"):
        train(toy_train_config(out_dir=str(root / f"{name}1"), **common, **arms[name]))
    return root


def test_two_process_clm_matches_one_process(runs):
    one, two = _log(runs / "clm1"), _log(runs / "clm2")
    assert len(one) == len(two) == 4
    for a, b in zip(one, two):
        assert abs(a["loss"] - b["loss"]) < 1e-5
    assert _max_diff(runs / "clm1", runs / "clm2") < 1e-4


def test_two_process_slm_with_global_ranking_matches_one_process(runs):
    one, two = _log(runs / "slm1"), _log(runs / "slm2")
    for a, b in zip(one, two):
        assert abs(a["loss_selected"] - b["loss_selected"]) < 1e-5
        assert a["selected_share"] == pytest.approx(b["selected_share"], abs=1e-9)
    assert _max_diff(runs / "slm1", runs / "slm2") < 1e-4


def test_local_ranking_selects_per_rank_and_differs_from_global(runs):
    local = _log(runs / "local2")
    # each rank selects ceil(half) of its own valid tokens (rows end in masked padding, so counts may be odd)
    assert all(0.5 <= r["selected"] < 0.5 + 0.01 for r in local)
    assert _max_diff(runs / "slm2", runs / "local2") > 1e-6
