"""The whole pipeline at toy size through the real paths: reference -> score -> SLM train -> export -> engine,
plus resumption of scoring and training, padding masking, the held-out masks, and the export round trip (engine
logits vs transformers within 1e-4)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from slm_train import checkpoint
from slm_train.cli import main as cli_main
from slm_train.config import ExportConfig, ScoreConfig
from slm_train.data import PackedData
from slm_train.export import export
from slm_train.reference import train_reference
from slm_train.score import ReferenceScores, score, shard_path
from slm_train.train import Trainer, train
from tests.slm_train.conftest import toy_train_config


@pytest.fixture(scope="module")
def pipeline_run(toy_corpora, tmp_path_factory):
    root = tmp_path_factory.mktemp("slm-pipeline")
    ref = train_reference(toy_train_config(data_dir=str(toy_corpora.clean), out_dir=str(root / "ref"),
                                           eval_data=str(toy_corpora.heldout), max_tokens=4 * 128 * 12))
    scores = score(ScoreConfig(data_dir=str(toy_corpora.noisy), ckpt=str(ref), out_dir=str(root / "scores"),
                               batch_size=16, shard_seqs=50, num_threads=1))
    slm = train(toy_train_config(data_dir=str(toy_corpora.noisy), scores_dir=str(scores), mode="slm", ratio=0.6,
                                 out_dir=str(root / "slm"), eval_data=str(toy_corpora.heldout)))
    hf = export(ExportConfig(ckpt=str(slm), data_dir=str(toy_corpora.noisy), out_dir=str(root / "hf")))
    return {"root": root, "ref": ref, "scores": scores, "slm": slm, "hf": hf}


def test_scores_are_the_reference_loss_on_the_same_rows(pipeline_run, toy_corpora):
    data = PackedData(toy_corpora.noisy)
    scores = ReferenceScores(pipeline_run["scores"], data)
    model, _ = checkpoint.load_model(pipeline_run["ref"])
    rows = np.array([0, 49, 50, data.num_seqs - 1])  # across a shard boundary
    with torch.inference_mode():
        expected = model(data.rows(rows)[0])
    assert torch.allclose(scores.rows(rows), expected, atol=1e-5)
    meta = json.loads((pipeline_run["scores"] / "meta.json").read_text())
    assert meta["mean_loss_by_label"]["random"] > meta["mean_loss_by_label"]["clean"]


def test_scoring_resumes_at_the_first_missing_shard(pipeline_run, toy_corpora):
    out = pipeline_run["scores"]
    before = np.load(shard_path(out, 1)).copy()
    shard_path(out, 1).unlink()
    first = shard_path(out, 0).stat().st_mtime_ns
    score(ScoreConfig(data_dir=str(toy_corpora.noisy), ckpt=str(pipeline_run["ref"]), out_dir=str(out),
                      batch_size=16, shard_seqs=50, num_threads=1))
    assert shard_path(out, 0).stat().st_mtime_ns == first  # finished shards are not recomputed
    assert np.allclose(np.load(shard_path(out, 1)), before, atol=1e-6)


def test_slm_log_has_selected_and_unselected_losses(pipeline_run):
    rows = [json.loads(x) for x in (pipeline_run["slm"].parent / "log.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "loss" in r]
    assert len(steps) == 6 and all(abs(r["selected"] - 0.6) < 0.01 for r in steps)
    assert all(r["loss_unselected"] > r["loss_selected"] for r in steps[2:])
    assert any("eval_loss" in r for r in rows)
    # SLM keeps clean tokens and drops the unpredictable noise (random ids, off-domain text) more than the average

    def pooled(names):
        kept = sum(r["selected_share"].get(n, 0) * r["label_count"].get(n, 0) for r in steps for n in names)
        return kept / sum(r["label_count"].get(n, 0) for r in steps for n in names)

    assert pooled(["clean"]) > 0.6 > pooled(["random", "offdomain"])
    evals = [r for r in rows if "eval_loss" in r]
    assert all(0.0 <= r["tf_accuracy"] <= 1.0 for r in evals) and evals[0]["step"] == 0


def test_padding_is_never_trained_on_nor_selected(pipeline_run, toy_corpora):
    from slm_train.noise import PAD

    trainer = Trainer(toy_train_config(data_dir=str(toy_corpora.noisy), scores_dir=str(pipeline_run["scores"]),
                                       mode="slm", ratio=0.9, out_dir=str(pipeline_run["root"] / "pad")))
    data = trainer.data
    rows = np.array([i for i in range(data.num_seqs) if (np.asarray(data.labels[i]) == PAD).any()][:4])
    tokens, labels = data.rows(rows)
    loss = trainer.model(tokens)
    for mode in ("clm", "slm", "random"):
        mask = trainer.select(loss, labels, rows, 0, mode)
        assert not (mask & (labels == PAD)).any() and not mask[:, 0].any()
        assert mask.sum() > 0


def test_heldout_masks_cover_the_solution_and_its_eos(toy_corpora):
    from slm_train.heldout import HeldoutSet
    from slm_train.tokenizer import load_tokenizer

    tok = load_tokenizer(toy_corpora.heldout / "tokenizer")
    h = HeldoutSet(toy_corpora.heldout, limit=5)
    assert len(h.problems) == 5 and h.num_tokens == int(h.loss_mask.sum())
    for i, p in enumerate(h.problems):
        solution = h.tokens[i][h.solution_mask[i]].tolist()
        assert solution[-1] == tok.eos_token_id and tok.decode(solution[:-1]).strip() == p.solution.strip()


def test_export_round_trip_engine_matches_transformers(pipeline_run):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from server.config import EngineConfig
    from server.engine import Engine

    hf_dir = pipeline_run["hf"]
    assert {"config.json", "model.safetensors", "generation_config.json", "tokenizer.json", "README.md"} <= {
        p.name for p in hf_dir.iterdir()}
    engine = Engine(EngineConfig(model_id=str(hf_dir)))
    ref = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(hf_dir)
    ours_model, _ = checkpoint.load_model(pipeline_run["slm"])
    for text in ("Question: Tina has 3 red cookies, 4 blue cookies and 2 green cookies. How many cookies does Tina "
                 "have in all?\nAnswer:", "What is 7 * 8?"):
        ids = tok(text).input_ids
        assert ids[0] == engine.checkpoint.tokenizer(text).input_ids[0] == 1
        with torch.inference_mode():
            expected = ref(torch.tensor([ids])).logits[0].float()
            trained = ours_model.logits(torch.tensor([ids]))[0]
        got = engine.prompt_logits(ids)
        assert torch.allclose(got, expected, atol=1e-4, rtol=0), (got - expected).abs().max()
        assert torch.allclose(trained, expected, atol=1e-4, rtol=0)


def test_exported_model_is_served_by_the_engine(pipeline_run):
    from slm_train.arith import heldout_problems
    from slm_train.evaluate import accuracy

    res = accuracy(pipeline_run["hf"], heldout_problems(4), max_new_tokens=8)
    assert res["num"] == 4 and len(res["completions"]) == 4 and 0.0 <= res["accuracy"] <= 1.0


def test_resume_continues_exactly(toy_corpora, tmp_path):
    cfg = toy_train_config(data_dir=str(toy_corpora.noisy), mode="random", ratio=0.5, out_dir=str(tmp_path / "a"),
                           eval_every=0)
    straight = checkpoint.load(train(cfg))["model"]
    interrupted = Trainer(cfg.__class__(**{**cfg.__dict__, "out_dir": str(tmp_path / "b")}))
    for _ in range(2):
        interrupted.optimizer_step()
    interrupted.save()
    resumed = train(cfg.__class__(**{**cfg.__dict__, "out_dir": str(tmp_path / "b"), "resume": True}))
    state = checkpoint.load(resumed)
    assert state["step"] == 6
    for k, v in straight.items():
        assert torch.allclose(state["model"][k], v, atol=1e-6), k


def test_cli_reports_user_errors_without_traceback(tmp_path, capsys):
    assert cli_main(["train", "--data_dir", str(tmp_path / "nothing"), "--out_dir", str(tmp_path / "o")]) == 2
    assert "not a corpus folder" in capsys.readouterr().err
    assert cli_main(["export", "--ckpt", str(tmp_path / "none.pt"), "--out_dir", str(tmp_path / "o")]) == 2


def test_slm_without_scores_is_refused(toy_corpora, tmp_path):
    assert cli_main(["train", "--mode", "slm", "--data_dir", str(toy_corpora.noisy),
                     "--out_dir", str(tmp_path / "o")]) == 2
