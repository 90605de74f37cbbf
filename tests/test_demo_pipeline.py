"""The README's main job (scripts/run_demo.sh -> uamix_fairseq.demo_pipeline) in its
shortened mode: every stage runs for real through fairseq-hydra-train, at toy size."""

import json
import os

import pytest
import torch

from uamix_fairseq.audiomae import load_audiomae
from uamix_fairseq.demo_pipeline import PipelineError, main, run_pipeline


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("pipeline")
    results = run_pipeline(str(out), quick=True, joint=True, seed=1)
    return out, results


def test_every_stage_ran_and_is_recorded(quick_run):
    out, results = quick_run
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["seconds"] == results["seconds"]
    assert set(results["seconds"]) == {"corpus", "mae", "uamix", "none", "joint", "fewshot",
                                       "total"}
    # The joint baseline stops at the wall-clock of MAE + uaMix (or its 6 updates).
    updates = results["updates"]
    assert {k: updates[k] for k in ("mae", "uamix", "none")} == {"mae": 3, "uamix": 3, "none": 3}
    assert 1 <= updates["joint"] <= 6
    joint_log = (out / "logs" / "joint.log").read_text()
    assert "stop_time_hours" in joint_log.splitlines()[0]
    for stage in updates:
        log = (out / "logs" / f"{stage}.log").read_text()
        assert f"num_updates {updates[stage]}" in log or f"num_updates={updates[stage]}" in log
        assert (out / stage / "checkpoints" / "checkpoint_last.pt").exists()
        assert os.listdir(out / "tensorboard" / stage)
    # uaMix and "none" differ only in the mixing.
    assert "mix_mode=none" in (out / "logs" / "none.log").read_text().splitlines()[0]


def test_encoders_are_exported_and_differ(quick_run):
    out, results = quick_run
    x = torch.randn(2, 1, 128, 128)
    outputs = {}
    for name in ("random", "mae", "none", "uamix", "joint"):
        enc = load_audiomae(results["encoders"][name]).eval()
        with torch.no_grad():
            outputs[name] = enc(x)
    # Pretraining changed the random start; tuning changed the pretrained encoder.
    assert not torch.allclose(outputs["random"], outputs["mae"])
    assert not torch.allclose(outputs["mae"], outputs["uamix"])
    assert not torch.allclose(outputs["uamix"], outputs["none"])
    assert not torch.allclose(outputs["random"], outputs["joint"])


def test_fewshot_table_on_heldout_classes(quick_run):
    out, results = quick_run
    for ext in ("json", "csv", "png"):
        assert (out / "fewshot" / f"fewshot.{ext}").exists()
    fewshot = results["fewshot"]
    assert fewshot["settings"]["manifest"].endswith("heldout.tsv")
    names = {e["name"] for e in fewshot["encoders"]}
    # Issue 11.13: every row is paired against the MAE, the tunings' start, and the
    # no-learning baseline is a row of the same episodes.
    assert names == {"random", "mae", "none", "uamix", "joint", "fbank-stats"}
    rows = fewshot["results"]
    assert {r["encoder"] for r in rows} == names
    assert all(r["diff_vs"] == "mae" for r in rows if r["encoder"] != "mae")
    corpus = results["corpus"]
    assert not set(corpus["heldout_classes"]) & set(corpus["seen_classes"])
    assert fewshot["settings"]["num_classes"] == len(corpus["heldout_classes"])


def test_refuses_to_reuse_a_run_folder(quick_run, capsys):
    out, _ = quick_run
    with pytest.raises(PipelineError, match="--overwrite"):
        run_pipeline(str(out), quick=True)
    assert main([str(out), "--quick"]) == 1
    assert "already holds a run" in capsys.readouterr().err
