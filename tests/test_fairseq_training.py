"""The plugin through fairseq's own trainer: freezing, checkpoints, resume, averaging,
loading, and config errors."""

import os
import re
import shutil

import pytest
import torch

import uamix_fairseq  # noqa: F401  (registers the components)
from uamix_fairseq.modules.audiomae import load_audiomae

from fairseq_helpers import make_tiny_setup, run_train, tiny_overrides


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    corpus, ckpt = make_tiny_setup(str(root))
    save_dir = str(root / "ckpt")
    code, log = run_train(tiny_overrides(corpus, ckpt, save_dir), cwd=str(root))
    assert code == 0, log[-4000:]
    return dict(root=root, corpus=corpus, ckpt=ckpt, save_dir=save_dir, log=log)


def _encoder_state(path):
    state = torch.load(path, map_location="cpu", weights_only=False)["model"]
    return {k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")}


def test_training_logs_every_part(trained):
    log = trained["log"]
    for key in ("clean_loss=", "mix_loss=", "accuracy=", "lam=", "queue_fill=",
                "trainable_blocks="):
        assert key in log
    assert "num_updates=6" in log
    assert os.listdir(os.path.join(trained["save_dir"], "tb"))


def test_frozen_weights_stay_bit_identical(trained):
    original = torch.load(trained["ckpt"], weights_only=False)["model"]
    stage_a = _encoder_state(os.path.join(trained["save_dir"], "checkpoint_1_3.pt"))
    stage_b = _encoder_state(os.path.join(trained["save_dir"], "checkpoint_last.pt"))
    # Stage A (updates 0-2): the whole encoder frozen, under weight decay 0.05.
    for k, v in stage_a.items():
        assert torch.equal(v, original[k]), f"{k} changed during head warm-up"
    # Stage B (updates 3-5): top 2 of 4 blocks train; the rest must not move.
    for k, v in stage_b.items():
        frozen = not (k.startswith(("blocks.2.", "blocks.3.", "norm.")))
        if frozen:
            assert torch.equal(v, original[k]), f"frozen {k} changed"
    for k in ("blocks.3.attn.qkv.weight", "blocks.2.mlp.fc1.weight", "norm.weight"):
        assert not torch.equal(stage_b[k], original[k]), f"trainable {k} did not train"


def test_checkpoint_state_is_averageable(trained):
    """What fairseq's scripts/average_checkpoints.py needs: identical key lists and
    float tensors only, so the element-wise mean is a loadable model state."""
    a = torch.load(os.path.join(trained["save_dir"], "checkpoint_1_3.pt"), weights_only=False)
    b = torch.load(os.path.join(trained["save_dir"], "checkpoint_last.pt"), weights_only=False)
    assert list(a["model"]) == list(b["model"])
    for k, v in a["model"].items():
        assert v.is_floating_point(), f"{k} is {v.dtype}: checkpoint averaging breaks"
    averaged = {k: (a["model"][k] + b["model"][k]) / 2 for k in a["model"]}
    from fairseq import checkpoint_utils

    models, _, task = checkpoint_utils.load_model_ensemble_and_task(
        [os.path.join(trained["save_dir"], "checkpoint_last.pt")])
    models[0].load_state_dict(averaged, strict=True)


def test_model_rebuilds_without_audiomae_file(trained, tmp_path):
    from fairseq import checkpoint_utils

    moved = str(tmp_path / "gone.pth")
    shutil.move(trained["ckpt"], moved)
    try:
        models, cfg, task = checkpoint_utils.load_model_ensemble_and_task(
            [os.path.join(trained["save_dir"], "checkpoint_last.pt")])
    finally:
        shutil.move(moved, trained["ckpt"])
    model = models[0].eval()
    assert model.encoder.depth == 4 and model.trainable_blocks == 2
    # load_audiomae reads the plugin's fairseq checkpoint into the same encoder.
    encoder = load_audiomae(os.path.join(trained["save_dir"], "checkpoint_last.pt")).eval()
    x = torch.randn(2, 1, 32, 128)
    with torch.no_grad():
        torch.testing.assert_close(encoder.embed(x), model.embed(x))


def test_resume_reproduces_the_run(trained, tmp_path):
    """6 updates + resume to 9 gives exactly what 9 straight updates give."""
    resumed_dir = str(tmp_path / "resumed")
    shutil.copytree(trained["save_dir"], resumed_dir)
    corpus, ckpt = trained["corpus"], trained["ckpt"]
    code, log = run_train(tiny_overrides(corpus, ckpt, resumed_dir, **{
        "optimization.max_update": 9}), cwd=str(tmp_path))
    assert code == 0, log[-3000:]
    assert "@ 6 updates" in log  # restored from checkpoint_last
    straight_dir = str(tmp_path / "straight")
    code, log2 = run_train(tiny_overrides(corpus, ckpt, straight_dir, **{
        "optimization.max_update": 9}), cwd=str(tmp_path))
    assert code == 0, log2[-3000:]
    a = torch.load(os.path.join(resumed_dir, "checkpoint_last.pt"), weights_only=False)
    b = torch.load(os.path.join(straight_dir, "checkpoint_last.pt"), weights_only=False)
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=1e-5, atol=1e-6,
                                   msg=f"{k} differs after resume")


def test_rerun_of_a_finished_run_trains_nothing(trained, tmp_path):
    """The same command again after max_update: it says so and exits 0, without a
    step 7 and without touching a checkpoint (checkpoint_best.pt included)."""
    save_dir = str(tmp_path / "done")
    shutil.copytree(trained["save_dir"], save_dir)

    def files():
        return {n: os.stat(os.path.join(save_dir, n)).st_mtime_ns
                for n in os.listdir(save_dir) if n.endswith(".pt")}

    before = files()
    code, log = run_train(tiny_overrides(trained["corpus"], trained["ckpt"], save_dir),
                          cwd=str(tmp_path))
    assert code == 0, log[-3000:]
    assert (f"This run is finished: {save_dir}/checkpoint_last.pt is at update 6 (epoch 1)"
            ", which already reaches optimization.max_update=6") in log, log[-3000:]
    assert "raise optimization.max_update" in log
    assert "num_updates=7" not in log and "Saving checkpoint" not in log
    assert files() == before


@pytest.mark.parametrize("override, message", [
    ({"model.freeze_schedule": "'[(0, 0), (3, 20)]'"},
     "asks for 20 trainable blocks at update 3, but the encoder has 4"),
    ({"optimizer": "adam"}, "needs optimizer=uamix_adamw"),
    ({"criterion.temperature": 0}, "criterion.temperature must be > 0"),
    ({"task.num_frames": 40}, "multiples of the 16x16 patch size"),
    ({"dataset.batch_size": 1}, "dataset.batch_size=1: task uamix_contrastive needs at "
     "least 2 clips per batch"),
])
def test_config_errors_are_clear(trained, tmp_path, override, message):
    code, log = run_train(tiny_overrides(trained["corpus"], trained["ckpt"],
                                         str(tmp_path / "ckpt"), **override),
                          cwd=str(tmp_path))
    assert code != 0
    assert message in log, log[-3000:]


def test_wrong_architecture_checkpoint_is_refused(trained, tmp_path):
    bad = tmp_path / "bad.pth"
    state = torch.load(trained["ckpt"], weights_only=False)["model"]
    state.pop("blocks.1.attn.qkv.weight")
    torch.save({"model": state}, bad)
    code, log = run_train(tiny_overrides(trained["corpus"], str(bad), str(tmp_path / "c")),
                          cwd=str(tmp_path))
    assert code != 0
    assert "missing (1): blocks.1.attn.qkv.weight" in log


def test_bf16_keeps_frozen_blocks_and_queue_exact(trained, tmp_path):
    """The GPU recipe's precision path (bf16 with one fp32 master weight per
    parameter), run on CPU: frozen blocks stay bit-identical, queue indices exact."""
    save_dir = str(tmp_path / "bf16")
    code, log = run_train(tiny_overrides(trained["corpus"], trained["ckpt"], save_dir, **{
        "common.bf16": "true", "common.fp16_no_flatten_grads": "true",
        "common.on_cpu_convert_precision": "true"}), cwd=str(tmp_path))
    assert code == 0, log[-3000:]
    original = torch.load(trained["ckpt"], weights_only=False)["model"]
    state = torch.load(os.path.join(save_dir, "checkpoint_last.pt"), weights_only=False)["model"]
    for k, v in state.items():
        if k.startswith(("encoder.blocks.0.", "encoder.blocks.1.", "encoder.patch_embed")):
            # fairseq saves bf16 weights as float32: compare after the same rounding.
            expected = original[k[len("encoder."):]].to(torch.bfloat16).to(v.dtype)
            assert torch.equal(v, expected), k
    assert not torch.equal(state["encoder.blocks.3.attn.qkv.weight"],
                           original["blocks.3.attn.qkv.weight"].to(torch.bfloat16).float())
    assert state["support_queue.indices"].dtype == torch.float64
    idx = state["support_queue.indices"]
    with open(os.path.join(trained["corpus"], "train.tsv")) as f:
        train_clips = len(f.read().splitlines()) - 1  # the root line first
    assert torch.equal(idx, idx.round()) and idx.max() < train_clips == 27


def test_plain_overrides_reach_every_component(trained, tmp_path):
    """The README's ablation as written: criterion.mix_mode=none, no '++' (issue 11,
    item 12), with fields demo.yaml does not name in each component."""
    save_dir = str(tmp_path / "none")
    overrides = tiny_overrides(trained["corpus"], trained["ckpt"], save_dir, **{
        "optimization.max_update": 2, "lr_scheduler.warmup_updates": 1})
    overrides += ["criterion.mix_mode=none", "criterion.temperature=0.2",
                  "model.layer_decay=0.5", "task.view_gain_db=3",
                  "optimizer.weight_decay=0.01", "lr_scheduler.min_lr=1e-7"]
    assert not any(o.startswith("+") for o in overrides)
    code, log = run_train(overrides, cwd=str(tmp_path))
    assert code == 0, log[-3000:]
    cfg = torch.load(os.path.join(save_dir, "checkpoint_last.pt"), map_location="cpu",
                     weights_only=False)["cfg"]
    assert (cfg["criterion"]["mix_mode"], cfg["criterion"]["temperature"]) == ("none", 0.2)
    assert (cfg["model"]["layer_decay"], cfg["task"]["view_gain_db"]) == (0.5, 3.0)
    assert (cfg["optimizer"]["weight_decay"], cfg["lr_scheduler"]["min_lr"]) == (0.01, 1e-7)


def test_paper_config_composes_and_runs(trained, tmp_path):
    """configs/uamix_as20k.yaml is a GPU recipe; shrunk to a CPU run of 2 updates it
    must still compose and train (bf16 path included)."""
    save_dir = str(tmp_path / "as20k")
    overrides = tiny_overrides(trained["corpus"], trained["ckpt"], save_dir, **{
        "common.cpu": "true", "common.on_cpu_convert_precision": "true",
        "distributed_training.distributed_world_size": 1,
        "distributed_training.ddp_backend": "legacy_ddp",
        "dataset.num_workers": 0, "optimization.max_update": 2,
        "lr_scheduler.warmup_updates": 1,
    })
    code, log = run_train(overrides, cwd=str(tmp_path), config_name="uamix_as20k")
    assert code == 0, log[-3000:]
    assert re.search(r'"num_updates": "2"', log), log[-2000:]  # json log format


def test_real_sounds_recipe_composes_and_runs(trained, tmp_path):
    """configs/real_sounds.yaml shrunk to 2 updates; the fields its runner sets are
    named in the yaml, so plain key=value overrides reach them."""
    save_dir = str(tmp_path / "real_sounds")
    overrides = tiny_overrides(trained["corpus"], trained["ckpt"], save_dir, **{
        "optimization.max_update": 2, "lr_scheduler.warmup_updates": 1})
    overrides += ["task.pad_mode=zero", "task.view_span=1.5", "common.seed=3"]
    code, log = run_train(overrides, cwd=str(tmp_path), config_name="real_sounds")
    assert code == 0, log[-3000:]
    assert "num_updates 2" in log or '"num_updates": "2"' in log, log[-2000:]
    cfg = torch.load(os.path.join(save_dir, "checkpoint_last.pt"), map_location="cpu",
                     weights_only=False)["cfg"]
    assert (cfg["task"]["view_span"], cfg["task"]["pad_mode"]) == (1.5, "zero")
    assert cfg["task"]["view_time_roll"] is False and cfg["common"]["seed"] == 3


def test_second_model_of_a_task_still_reads_its_file(trained):
    """Only restoring a checkpoint may skip the encoder file; building a second model
    from the same task must not silently start from random weights."""
    from omegaconf import OmegaConf
    from uamix_fairseq.models.uamix_audiomae import UamixAudioMAEConfig, UamixAudioMAEModel
    from uamix_fairseq.tasks.uamix_contrastive import (
        UamixContrastiveConfig, UamixContrastiveTask,
    )

    task = UamixContrastiveTask.setup_task(OmegaConf.structured(
        UamixContrastiveConfig(data=trained["corpus"], num_frames=32, seed=1)))
    model_cfg = OmegaConf.structured(UamixAudioMAEConfig(
        audiomae_checkpoint=trained["ckpt"], num_frames=32, proj_hidden_dim=32,
        pred_hidden_dim=32, proj_out_dim=16, freeze_schedule="[(0, 0), (3, 2)]"))
    first = UamixAudioMAEModel.build_model(model_cfg, task)
    second = UamixAudioMAEModel.build_model(model_cfg, task)
    original = torch.load(trained["ckpt"], weights_only=False)["model"]
    for m in (first, second):
        assert torch.equal(m.encoder.blocks[0].attn.qkv.weight, original["blocks.0.attn.qkv.weight"])


def _train_clips(corpus):
    with open(os.path.join(corpus, "train.tsv")) as f:
        return len(f.read().splitlines()) - 1


def test_checkpoint_loads_without_the_data(trained, tmp_path):
    """Issue 11.3: the model (its support queue capped at the training clips included)
    rebuilds from the checkpoint alone, and so do the tools that read checkpoints."""
    from fairseq import checkpoint_utils
    from uamix_fairseq.tools import export
    from uamix_fairseq.tools.embed import EmbedConfig, load_encoder

    path = os.path.join(trained["save_dir"], "checkpoint_last.pt")
    clips = _train_clips(trained["corpus"])
    moved = str(tmp_path / "corpus")
    shutil.move(trained["corpus"], moved)
    try:
        models, cfg, task = checkpoint_utils.load_model_ensemble_and_task([path])
        assert export.main([path, str(tmp_path / "enc.pth")]) == 0
        encoder = load_encoder(path, EmbedConfig(num_frames=32))
    finally:
        shutil.move(moved, trained["corpus"])
    model = models[0].eval()
    assert cfg.model.effective_queue_size == clips == model.support_queue.size
    saved = torch.load(path, weights_only=False)["model"]
    for name in ("features", "indices", "state"):  # the queue itself, not an empty one
        assert torch.equal(getattr(model.support_queue, name), saved["support_queue." + name])
    assert model.support_queue.filled > 0
    x = torch.randn(2, 1, 32, 128)
    with torch.no_grad():
        torch.testing.assert_close(encoder.eval().embed(x), model.embed(x))


def test_checkpoint_carries_the_encoder_shape_in_its_model_config(trained, tmp_path):
    """The encoder's shape travels in the saved model config (``model.encoder_args``,
    as wav2vec2 carries ``w2v_args``), not in the task state; the model rebuilds from
    the checkpoint without its AudioMAE file, and only from a checkpoint."""
    from fairseq import checkpoint_utils
    from uamix_fairseq.modules.audiomae import encoder_args

    path = os.path.join(trained["save_dir"], "checkpoint_last.pt")
    state = torch.load(path, weights_only=False)
    original = load_audiomae(trained["ckpt"])
    assert state["cfg"]["model"]["encoder_args"] == encoder_args(original)
    assert "encoder_config" not in (state.get("task_state") or {})
    moved = str(tmp_path / "moved_audiomae.pth")
    shutil.move(trained["ckpt"], moved)
    try:
        models, cfg, task = checkpoint_utils.load_model_ensemble_and_task([path])
        with pytest.raises(Exception, match="audiomae.pth|No such file"):
            task.build_model(cfg.model)  # a new model (not from a checkpoint) needs the file
    finally:
        shutil.move(moved, trained["ckpt"])
    saved = {k[len("encoder."):]: v for k, v in state["model"].items()
             if k.startswith("encoder.")}
    for k, v in models[0].encoder.state_dict().items():
        assert torch.equal(v, saved[k]), k
    second = task.build_model(cfg.model)  # the file is back: its weights, not the tuned ones
    assert torch.equal(second.encoder.blocks[0].attn.qkv.weight,
                       original.blocks[0].attn.qkv.weight)


def test_resume_after_the_manifest_grew(trained, tmp_path):
    """Issue 11.3: more training clips make a longer queue; resuming says why the
    saved one is emptied and trains on."""
    corpus = str(tmp_path / "corpus")
    shutil.copytree(trained["corpus"], corpus)
    for ext in ("tsv", "label"):  # the valid clips join the training set
        with open(os.path.join(corpus, f"valid.{ext}")) as f:
            rows = f.read().splitlines()[1:] if ext == "tsv" else f.read().splitlines()
        with open(os.path.join(corpus, f"train.{ext}"), "a") as f:
            f.write("".join(r + "\n" for r in rows))
    save_dir = str(tmp_path / "ckpt")
    shutil.copytree(trained["save_dir"], save_dir)
    code, log = run_train(tiny_overrides(corpus, trained["ckpt"], save_dir, **{
        "optimization.max_update": 7}), cwd=str(tmp_path))
    assert code == 0, log[-3000:]
    assert "support queue emptied on load" in log, log[-3000:]
    assert f"holds {_train_clips(trained['corpus'])} entries" in log
    state = torch.load(os.path.join(save_dir, "checkpoint_last.pt"), weights_only=False)
    assert state["model"]["support_queue.features"].shape[0] == _train_clips(corpus)
    assert state["cfg"]["model"]["effective_queue_size"] == _train_clips(corpus)


def _average_model_states(paths):
    """What fairseq's scripts/average_checkpoints.py does to the `model` entries: the
    element-wise mean of every tensor (float tensors summed, then divided)."""
    states = [torch.load(p, map_location="cpu", weights_only=False)["model"] for p in paths]
    return {k: sum(s[k].double() for s in states).div(len(states)).to(states[0][k].dtype)
            for k in states[0]}


def test_averaged_checkpoint_evaluates_and_trains_on(trained, tmp_path, caplog):
    """Issue 11.6: averaging makes the queue's indices fractional; loading empties
    the queue (logged) and keeps the averaged encoder; training continues from it."""
    from fairseq import checkpoint_utils

    a, b = (os.path.join(trained["save_dir"], f) for f in ("checkpoint_1_3.pt",
                                                           "checkpoint_last.pt"))
    averaged = _average_model_states([a, b])
    idx = averaged["support_queue.indices"]
    assert not torch.equal(idx, idx.round())  # the defect: fractional clip indices
    state = torch.load(b, weights_only=False)
    state["model"] = averaged
    path = str(tmp_path / "averaged.pt")
    torch.save(state, path)
    with caplog.at_level("WARNING", logger="uamix_fairseq.models.uamix_audiomae"):
        models, _, _ = checkpoint_utils.load_model_ensemble_and_task([path])
    assert "support queue emptied on load" in caplog.text
    queue = models[0].support_queue
    assert queue.filled == 0 and (queue.indices == -1).all() and int(queue.state[0]) == 0
    key = "encoder.blocks.3.attn.qkv.weight"
    assert torch.equal(models[0].state_dict()[key], averaged[key])

    save_dir = str(tmp_path / "ckpt")
    code, log = run_train(tiny_overrides(trained["corpus"], trained["ckpt"], save_dir, **{
        "checkpoint.restore_file": path, "optimization.max_update": 8}), cwd=str(tmp_path))
    assert code == 0, log[-3000:]
    assert "support queue emptied on load" in log
    queue_state = torch.load(os.path.join(save_dir, "checkpoint_last.pt"),
                             weights_only=False)["model"]
    idx, ptr = queue_state["support_queue.indices"], queue_state["support_queue.state"]
    assert torch.equal(idx, idx.round()) and ptr.tolist() == [8.0, 8.0]  # 2 updates x 4


def _corpus_copy(trained, tmp_path):
    corpus = str(tmp_path / "corpus")
    shutil.copytree(trained["corpus"], corpus)
    os.remove(os.path.join(corpus, "train.label"))  # only feeds nn_purity
    with open(os.path.join(corpus, "train.tsv")) as f:
        lines = f.read().splitlines()
    return corpus, lines


def test_one_clip_manifest_is_refused_by_name(trained, tmp_path):
    """Issue 11.8: a one-clip train.tsv stops at start-up with the manifest's name."""
    corpus, lines = _corpus_copy(trained, tmp_path)
    with open(os.path.join(corpus, "train.tsv"), "w") as f:
        f.write("\n".join(lines[:2]) + "\n")
    code, log = run_train(tiny_overrides(corpus, trained["ckpt"], str(tmp_path / "c")),
                          cwd=str(tmp_path))
    assert code != 0
    assert "train.tsv lists 1 clip(s), but task uamix_contrastive needs at least 2" in log, \
        log[-3000:]


def test_batches_shrunk_by_bad_audio_are_dropped(trained, tmp_path):
    """Issue 11.8: with every other training clip unreadable and 2 clips per batch,
    batches left with one clip (or none, the first one included) are dropped and
    counted; training reaches max_update."""
    corpus, lines = _corpus_copy(trained, tmp_path)
    root = lines[0]
    for line in lines[1::2]:
        with open(os.path.join(root.replace(trained["corpus"], corpus),
                               line.split("\t")[0]), "wb") as f:
            f.write(b"not audio")
    with open(os.path.join(corpus, "train.tsv"), "w") as f:  # the copy's audio
        f.write("\n".join([root.replace(trained["corpus"], corpus)] + lines[1:]) + "\n")
    save_dir = str(tmp_path / "c")
    code, log = run_train(tiny_overrides(corpus, trained["ckpt"], save_dir, **{
        "task.skip_bad_audio": "true", "dataset.batch_size": 2,
        "optimization.max_update": 4}), cwd=str(tmp_path))
    assert code == 0, log[-3000:]
    assert "dropping a batch of 2 clips: only 1 readable left" in log
    assert "dropped_batches=1" in log and "every batch of it was dropped" in log
    assert "num_updates=4" in log and "Traceback" not in log and "loss=nan" not in log


@pytest.mark.parametrize("fields, message", [
    ({"mix_snap": 0}, "criterion.mix_snap must be >= 1"),
    ({"mix_snap": 5}, "criterion.mix_snap=5 must divide task.num_frames=32"),
])
def test_mix_snap_is_checked_at_start_up(fields, message):
    """Named, and before the first step (issue 11, item 9)."""
    from types import SimpleNamespace

    from uamix_fairseq.criterions.uamix_nnclr import UamixNNCLRConfig, UamixNNCLRCriterion

    task = SimpleNamespace(cfg=SimpleNamespace(num_frames=32))
    with pytest.raises(ValueError, match=re.escape(message)):
        UamixNNCLRCriterion(UamixNNCLRConfig(**fields), task)
    # Without T-CutMix the grid is unused: only the >= 1 rule applies.
    UamixNNCLRCriterion(UamixNNCLRConfig(mix_mode="mixup", mix_snap=5), task)


def test_queue_size_zero_names_the_field():
    from types import SimpleNamespace

    from uamix_fairseq.models.uamix_audiomae import UamixAudioMAEConfig, UamixAudioMAEModel

    with pytest.raises(ValueError, match=re.escape("model.queue_size must be >= 1")):
        UamixAudioMAEModel.build_model(UamixAudioMAEConfig(queue_size=0), SimpleNamespace())
