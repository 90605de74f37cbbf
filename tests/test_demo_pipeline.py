"""The README's main job (scripts/run_demo.sh -> examples/demo/demo_pipeline.py) in its
shortened mode: every stage runs for real through fairseq-hydra-train, at toy size."""

import json
import os

import pytest
import torch

from uamix_fairseq.modules.audiomae import load_audiomae
from demo_pipeline import SHIPPED, PipelineError, main, run_pipeline


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """MAE pretraining from scratch, the tunings and the joint baseline."""
    out = tmp_path_factory.mktemp("pipeline")
    results = run_pipeline(str(out), quick=True, joint=True, seed=1, start="scratch")
    return out, results


@pytest.fixture(scope="module")
def shipped_run(tmp_path_factory):
    """The default: the tunings start from the AudioMAE shipped in pretrained/."""
    out = tmp_path_factory.mktemp("pipeline_shipped")
    return out, run_pipeline(str(out), quick=True, seed=1)


def test_default_start_is_the_shipped_checkpoint(shipped_run):
    out, results = shipped_run
    assert results["start"] == "shipped"
    assert results["encoders"]["mae"] == SHIPPED
    assert "mae" not in results["seconds"] and not (out / "mae").exists()
    assert results["updates"] == {"uamix": 3, "none": 3, "sup": 3}
    for stage in ("uamix", "none", "sup"):
        command = (out / "logs" / f"{stage}.log").read_text().splitlines()[0]
        assert SHIPPED in command
    # The shipped encoder has 6 blocks: the tunings train all 6 after the warm-up (the
    # patch embedding stays frozen), monitor the held-out classes and clips, and the
    # random row has the shipped architecture.
    command = (out / "logs" / "uamix.log").read_text().splitlines()[0]
    assert "model.freeze_schedule='[(0, 0), (2, 6)]'" in command
    assert "heldout.tsv," in command and "seen_test.tsv'" in command
    shipped, random = load_audiomae(SHIPPED), load_audiomae(results["encoders"]["random"])
    assert random.cfg == shipped.cfg
    start = shipped.state_dict()
    tuned = load_audiomae(results["encoders"]["uamix"]).state_dict()
    assert all(torch.equal(start[k], tuned[k]) for k in start if k.startswith("patch_embed."))
    for block in ("blocks.0.", "blocks.5."):
        assert any(not torch.equal(start[k], tuned[k]) for k in start if k.startswith(block))
    names = {e["name"] for e in results["fewshot"]["encoders"]}
    assert names == {"random", "mae", "none", "uamix", "sup", "fbank-stats"}


def test_joint_needs_the_scratch_start(tmp_path):
    with pytest.raises(PipelineError, match="--start scratch"):
        run_pipeline(str(tmp_path), quick=True, joint=True)
    with pytest.raises(PipelineError, match="unknown start 'mine'"):
        run_pipeline(str(tmp_path), quick=True, start="mine")


def test_every_stage_ran_and_is_recorded(quick_run):
    out, results = quick_run
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["seconds"] == results["seconds"]
    assert set(results["seconds"]) == {"corpus", "mae", "uamix", "none", "sup", "joint",
                                       "fewshot", "total"}
    # The joint baseline stops at the wall-clock of MAE + uaMix (or its 6 updates).
    updates = results["updates"]
    assert {k: updates[k] for k in ("mae", "uamix", "none", "sup")} == \
        {"mae": 3, "uamix": 3, "none": 3, "sup": 3}
    assert 1 <= updates["joint"] <= 6
    joint_log = (out / "logs" / "joint.log").read_text()
    assert "stop_time_hours" in joint_log.splitlines()[0]
    for stage in updates:
        log = (out / "logs" / f"{stage}.log").read_text()
        assert f"num_updates {updates[stage]}" in log or f"num_updates={updates[stage]}" in log
        assert (out / stage / "checkpoints" / "checkpoint_last.pt").exists()
        assert os.listdir(out / "tensorboard" / stage)
    # The monitor of both held-out sets, at every validation, for every stage but MAE.
    assert set(results["monitor_curves"]) == {"uamix", "none", "sup"}
    for stage, sets in results["monitor_curves"].items():
        assert set(sets) == {"heldout", "seen_test"}
        for curve in sets.values():
            assert [point[0] for point in curve] == [3], (stage, curve)  # validated at 3
            assert all(0 <= value <= 100 for value in curve[0][1:])
    assert on_disk["monitor_curves"] == json.loads(json.dumps(results["monitor_curves"]))
    # uaMix and "none" differ only in the mixing.
    assert "mix_mode=none" in (out / "logs" / "none.log").read_text().splitlines()[0]
    # The supervised reference trains on the seen classes' labels with the tunings'
    # freezing schedule.
    sup_command = (out / "logs" / "sup.log").read_text().splitlines()[0]
    assert "--config-name finetune_demo" in sup_command
    assert "model.freeze_schedule='[(0, 0), (2, 2)]'" in sup_command
    assert "model.freeze_schedule='[(0, 0), (2, 2)]'" in \
        (out / "logs" / "uamix.log").read_text().splitlines()[0]


def test_supervised_reference_trains_only_the_tunings_blocks(quick_run):
    """Same trainable blocks as the tunings: after 3 updates (both blocks unfrozen at 2)
    the patch embedding and cls token are bit-identical to the MAE, both blocks moved,
    and the encoder is in the fine-tuned layout (fc_norm)."""
    out, results = quick_run
    mae = torch.load(results["encoders"]["mae"], weights_only=True)["model"]
    sup = torch.load(results["encoders"]["sup"], weights_only=True)["model"]
    assert "fc_norm.weight" in sup and "norm.weight" not in sup
    frozen = [k for k in mae if k.startswith(("patch_embed.", "cls_token"))]
    assert frozen and all(torch.equal(mae[k], sup[k]) for k in frozen)
    for block in ("blocks.0.", "blocks.1."):
        assert any(not torch.equal(mae[k], sup[k]) for k in mae if k.startswith(block))


def test_encoders_are_exported_and_differ(quick_run):
    out, results = quick_run
    x = torch.randn(2, 1, 128, 128)
    outputs = {}
    for name in ("random", "mae", "none", "uamix", "sup", "joint"):
        enc = load_audiomae(results["encoders"][name]).eval()
        with torch.no_grad():
            outputs[name] = enc(x)
    # Pretraining changed the random start; tuning changed the pretrained encoder.
    assert not torch.allclose(outputs["random"], outputs["mae"])
    assert not torch.allclose(outputs["mae"], outputs["uamix"])
    assert not torch.allclose(outputs["uamix"], outputs["none"])
    assert not torch.allclose(outputs["random"], outputs["joint"])
    assert not torch.allclose(outputs["mae"], outputs["sup"])


def test_fewshot_table_on_heldout_classes(quick_run):
    out, results = quick_run
    for ext in ("json", "csv", "png"):
        assert (out / "fewshot" / f"fewshot.{ext}").exists()
    fewshot = results["fewshot"]
    assert fewshot["settings"]["manifest"].endswith("heldout.tsv")
    names = {e["name"] for e in fewshot["encoders"]}
    # Issue 11.13: every row is paired against the MAE, the tunings' start, and the
    # no-learning baseline is a row of the same episodes.
    assert names == {"random", "mae", "none", "uamix", "sup", "joint", "fbank-stats"}
    rows = fewshot["results"]
    assert {r["encoder"] for r in rows} == names
    assert all(r["diff_vs"] == "mae" for r in rows if r["encoder"] != "mae")
    corpus = results["corpus"]
    assert not set(corpus["heldout_classes"]) & set(corpus["seen_classes"])
    assert fewshot["settings"]["num_classes"] == len(corpus["heldout_classes"])


def test_fewshot_table_on_heldout_clips_of_seen_classes(quick_run):
    """The second table: the seen classes (the supervised reference's own labels), on
    clips no stage trained on, with the same encoders, baseline and pairing."""
    out, results = quick_run
    for ext in ("json", "csv", "png"):
        assert (out / "fewshot_seen" / f"fewshot.{ext}").exists()
    seen = results["fewshot_seen"]
    assert seen["settings"]["manifest"].endswith("seen_test.tsv")
    corpus = results["corpus"]
    assert seen["settings"]["num_classes"] == len(corpus["seen_classes"])
    assert {e["name"] for e in seen["encoders"]} == \
        {e["name"] for e in results["fewshot"]["encoders"]}
    assert all(r["diff_vs"] == "mae" for r in seen["results"] if r["encoder"] != "mae")
    train = (out / "corpus" / "train.tsv").read_text().splitlines()[1:]
    test = (out / "corpus" / "seen_test.tsv").read_text().splitlines()[1:]
    assert test and not {line.split("\t")[0] for line in train} & \
        {line.split("\t")[0] for line in test}


def test_refuses_to_reuse_a_run_folder(quick_run, capsys):
    out, _ = quick_run
    with pytest.raises(PipelineError, match="--overwrite"):
        run_pipeline(str(out), quick=True)
    assert main([str(out), "--quick"]) == 1
    assert "already holds a run" in capsys.readouterr().err


def test_cpu_model_names_family_model_and_vector_width(tmp_path):
    from demo_pipeline import cpu_model

    info = tmp_path / "cpuinfo"
    block = ("processor\t: {n}\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\n"
             "model name\t: AMD EPYC\nflags\t\t: fpu sse4_2 avx avx2 avx512f avx512bw\n\n")
    info.write_text(block.format(n=0) + block.format(n=1).replace("AMD EPYC", "other"))
    assert cpu_model(str(info)) == "AMD EPYC (family 25, model 17, avx512f)"  # first CPU only
    info.write_text("model name\t: Some CPU\nflags\t\t: fpu sse4_2 avx avx2\n")
    assert cpu_model(str(info)) == "Some CPU (avx2)"
    info.write_text("model name\t: Bare\n")
    assert cpu_model(str(info)) == "Bare"
    info.write_text("processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd\n")  # aarch64
    assert cpu_model(str(info))  # the machine type, never empty
