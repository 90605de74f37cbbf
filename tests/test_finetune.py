"""Supervised fine-tuning: task `uamix_audio_classification`, model
`uamix_audiomae_classifier`, criterion `uamix_classification`.

Pieces against hand computations and scikit-learn; then, on the generated demo audio,
fairseq-hydra-train (single-label with the demo config, multi-label with the AS-20K
recipe, one update of each other recipe; all shrunk to CPU and run side by side) and
fairseq-validate on a checkpoint without its encoder file.
"""

import json
import math
import os
import re
import shutil
import subprocess
import sys
from dataclasses import asdict

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

import uamix_fairseq  # noqa: F401  (registers the components)
from uamix_fairseq.modules.audiomae import EncoderConfig, load_audiomae, write_random_audiomae
from uamix_fairseq.criterions import uamix_classification as crit_mod
from uamix_fairseq.criterions.uamix_classification import (UamixClassificationConfig,
                                                           UamixClassificationCriterion,
                                                           soft_cross_entropy)
from demo_data import SEEN_CLASSES
from demo_data import main as demo_data_main
from uamix_fairseq.labels import LabelError
from uamix_fairseq.manifest import read_manifest
from uamix_fairseq.models.uamix_audiomae_classifier import (UamixAudioMAEClassifier,
                                                            UamixAudioMAEClassifierConfig,
                                                            structured_patch_dropout)
from fairseq_helpers import CPU_OVERRIDES
from uamix_fairseq.tasks.uamix_audio_classification import (UamixAudioClassificationConfig,
                                                            UamixAudioClassificationTask,
                                                            mixup_waveforms)

from fairseq_helpers import REPO, USER_DIR

TINY = EncoderConfig(embed_dim=64, depth=2, num_heads=1, num_frames=32)


# ------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("finetune")
    data = str(root / "corpus")
    assert demo_data_main([data, "--clips-per-class", "2", "--seconds", "0.5",
                           "--valid-percent", "0.25"]) == 0
    encoder = str(root / "tiny_audiomae.pth")
    write_random_audiomae(encoder, TINY, seed=0)
    return dict(root=root, data=data, encoder=encoder)


def _lines(path):
    with open(path) as f:
        return f.read().split()


def _write_lines(path, lines):
    with open(path, "w") as f:
        f.write("".join(line + "\n" for line in lines))


def _copy_corpus(corpus, dest):
    """A copy of the manifests and labels (the audio stays where the roots point)."""
    os.makedirs(dest)
    for name in os.listdir(corpus["data"]):
        if name.endswith((".tsv", ".label")):
            shutil.copy(os.path.join(corpus["data"], name), dest)
    return dest


def _task(data, **overrides):
    cfg = UamixAudioClassificationConfig(data=data, num_frames=32, seed=1,
                                         train_subset="train", **overrides)
    return UamixAudioClassificationTask.setup_task(cfg)


# ------------------------------------------------------------------------ model pieces
def test_structured_patch_dropout_keeps_whole_rows_and_columns():
    b, tp, fp = 8, 8, 8
    t_idx, f_idx = torch.meshgrid(torch.arange(tp), torch.arange(fp), indexing="ij")
    # Token k of clip i carries (i, t, f): time-major, as the patch embedding flattens.
    ident = torch.stack([t_idx.flatten(), f_idx.flatten()], dim=1).float()
    tokens = torch.cat([torch.arange(b).float()[:, None, None].expand(b, tp * fp, 1),
                        ident[None].expand(b, -1, -1)], dim=2)
    out = structured_patch_dropout(tokens, (tp, fp), 0.25, 0.4,
                                   torch.Generator().manual_seed(0))
    keep_t, keep_f = int(8 * 0.75), int(8 * 0.6)  # 6 rows, 4 columns
    assert out.shape == (b, keep_t * keep_f, 3)
    row_sets = set()
    for i in range(b):
        assert torch.all(out[i, :, 0] == i)
        pairs = [(int(t), int(f)) for t, f in out[i, :, 1:].tolist()]
        rows = sorted({t for t, _ in pairs})
        cols = sorted({f for _, f in pairs})
        assert len(rows) == keep_t and len(cols) == keep_f
        # Exactly the product of the kept rows and columns, in grid order.
        assert pairs == [(t, f) for t in rows for f in cols]
        row_sets.add(tuple(rows))
    assert len(row_sets) > 1, "every clip dropped the same rows"
    # AudioMAE's counts on its 64 x 8 grid: int(64 * 0.8) * int(8 * 0.8) = 51 * 6.
    grid = torch.zeros(2, 512, 4)
    assert structured_patch_dropout(grid, (64, 8), 0.2, 0.2).shape == (2, 306, 4)


class _FakeTask:
    def __init__(self, classes):
        self.classes, self.multilabel = classes, False


def _model(encoder, **overrides):
    cfg = UamixAudioMAEClassifierConfig(encoder_checkpoint=encoder, num_frames=32, **overrides)
    return UamixAudioMAEClassifier.build_model(cfg, _FakeTask(["a", "b", "c"]))


def test_patch_dropout_only_in_training_and_encoder_layout(corpus):
    model = _model(corpus["encoder"], drop_path_rate=0.0)
    enc = model.encoder
    # Pretrained file: final `norm` dropped, fresh fc_norm (AudioMAE's fine-tuning layout).
    assert enc.final_norm == "fc_norm" and not hasattr(enc, "norm")
    assert torch.equal(enc.fc_norm.weight, torch.ones(64))
    x = torch.randn(3, 1, 32, 128)
    with torch.no_grad():
        expected = enc.pool(enc(x), "mean")  # all tokens, mean of patches, fc_norm
        torch.testing.assert_close(model.eval().embed(x), expected)
        assert model.eval()(x).shape == (3, 3)
        assert not torch.allclose(model.train().embed(x), expected)
        model.cfg.mask_t_prob = model.cfg.mask_f_prob = 0.0
        torch.testing.assert_close(model.train().embed(x), expected)


def test_patch_dropout_is_the_encoder_on_the_kept_patches(corpus):
    """Training embedding against the computation written out: patches + positions,
    ``structured_patch_dropout`` of them (same global seed), cls first, the blocks
    (drop path on), mean of the patch tokens, fc_norm."""
    model = _model(corpus["encoder"], mask_t_prob=0.25, mask_f_prob=0.3).train()
    enc = model.encoder
    x = torch.randn(3, 1, 32, 128)
    torch.manual_seed(7)
    got = model.embed(x)
    torch.manual_seed(7)
    tokens = enc.patch_embed(x) + enc.pos_embed[:, 1:]
    kept = structured_patch_dropout(tokens, enc.cfg.grid, 0.25, 0.3)
    h = torch.cat([(enc.cls_token + enc.pos_embed[:, :1]).expand(3, -1, -1), kept], 1)
    for blk in enc.blocks:
        h = blk(h)
    assert kept.shape[1] == int(2 * 0.75) * int(8 * 0.7)
    assert torch.equal(got, enc.fc_norm(h[:, 1:].mean(dim=1)))


def test_encoder_from_a_uamix_fairseq_checkpoint(corpus, tmp_path):
    """A uaMix-tuned encoder (fairseq checkpoint of the contrastive model) initialises
    the classifier: encoder weights kept, head and queue ignored, heads from the saved
    model config (model.encoder_args)."""
    tuned = load_audiomae(corpus["encoder"])
    state = {f"encoder.{k}": v + 1.0 for k, v in tuned.state_dict().items()}
    state["head.projector.0.weight"] = torch.ones(4, 64)
    state["support_queue.bank"] = torch.zeros(8, 4)
    config = {**asdict(tuned.cfg), "num_heads": 2}
    path = str(tmp_path / "uamix_checkpoint.pt")
    torch.save({"model": state, "cfg": {"model": {"encoder_args": {
        "config": config, "final_norm": "norm"}}}}, path)
    enc = _model(path).encoder
    assert enc.cfg.num_heads == 2 and enc.final_norm == "fc_norm"
    for k, v in enc.state_dict().items():
        if not k.startswith("fc_norm."):
            assert torch.equal(v, state[f"encoder.{k}"]), k


def test_layer_decay_tags(corpus):
    model = _model(corpus["encoder"], layer_decay=0.5)
    tags = {n: p.optim_overrides for n, p in model.named_parameters()}
    # depth 2: block i at 0.5 ** (2 - i), embedding at 0.5 ** 3, fc_norm and head at 1.
    assert tags["encoder.blocks.0.attn.qkv.weight"]["lr_scale"] == 0.25
    assert tags["encoder.blocks.1.mlp.fc1.weight"]["lr_scale"] == 0.5
    assert tags["encoder.patch_embed.proj.weight"]["lr_scale"] == 0.125
    assert tags["encoder.cls_token"] == {"unit": "encoder.embed", "lr_scale": 0.125,
                                         "weight_decay": 0.0}
    assert tags["encoder.fc_norm.weight"]["lr_scale"] == 1.0
    assert tags["head.weight"] == {"unit": "head", "lr_scale": 1.0, "weight_decay": None}
    assert tags["head.bias"]["weight_decay"] == 0.0
    assert tags["encoder.blocks.0.norm1.weight"]["weight_decay"] == 0.0


# ------------------------------------------------------------------------ criterion
def test_label_smoothing_against_hand_computation():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 1.5, 0.0]])
    target = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    eps = 0.1
    expected = []
    for z, k in ((logits[0].tolist(), 0), (logits[1].tolist(), 1)):
        log_norm = math.log(sum(math.exp(v) for v in z))
        q = [eps / 3 + (1 - eps) * (j == k) for j in range(3)]
        expected.append(-sum(qj * (zj - log_norm) for qj, zj in zip(q, z)))
    torch.testing.assert_close(soft_cross_entropy(logits, target, eps),
                               torch.tensor(expected))

    class Fixed(torch.nn.Module):
        def forward(self, source):
            return logits

    task = _FakeTask(["a", "b", "c"])
    crit = UamixClassificationCriterion(UamixClassificationConfig(label_smoothing=eps), task)
    loss, n, log = crit(Fixed(), {"net_input": {"source": None}, "target": target})
    assert n == 2 and int(log["correct"]) == 2
    assert abs(float(loss) - sum(expected)) < 1e-5  # summed; fairseq divides by n


def _synced(per_rank):
    """What fairseq's summing reduction makes of one step's logging outputs."""
    return {k: sum(out[k] for out in per_rank) for k in per_rank[0]}


def test_map_is_exact_over_batches_ranks_and_dummy_batches(monkeypatch):
    rng = np.random.default_rng(0)
    n, c = 18, 5
    scores = np.round(rng.random((n, c)), 1)  # one decimal: many tied scores
    targets = (rng.random((n, c)) < 0.35).astype(np.float32)
    targets[:, 4] = 0  # a class without positives: no AP, left out of the mean
    targets[0, :4] = 1
    reference = 100 * np.mean([average_precision_score(targets[:, k], scores[:, k])
                               for k in range(4)])

    monkeypatch.setattr(crit_mod, "is_distributed", lambda: False)
    logits = torch.logit(torch.tensor(scores, dtype=torch.float64).clamp(1e-6, 1 - 1e-6))

    def rank_output(rank, rows, dummy=False):
        monkeypatch.setattr(crit_mod, "rank_and_world", lambda: (rank, 2))
        out = UamixClassificationCriterion._rank_slots(torch.sigmoid(logits[rows]),
                                                       torch.tensor(targets[rows]))
        out.update(loss=0.0, sample_size=len(rows))
        # fairseq zeroes the logging output of a dummy batch (a rank out of data).
        return {k: v * 0 for k, v in out.items()} if dummy else out

    # Two ranks, three steps of 3 clips each; in the last step rank 1 has only a dummy
    # batch (a copy of real clips) and the single-process path gets its own list.
    steps = [[rank_output(0, [0, 1, 2]), rank_output(1, [3, 4, 5])],
             [rank_output(0, [6, 7, 8]), rank_output(1, [9, 10, 11])],
             [rank_output(0, [12, 13, 14]), rank_output(1, [0, 1, 2], dummy=True)]]
    from fairseq.logging import metrics

    with metrics.aggregate(new_root=True) as agg:
        for step in steps:
            UamixClassificationCriterion.reduce_metrics([_synced(step)])
        assert agg.get_smoothed_values()["mAP"] == round(float(
            100 * np.mean([average_precision_score(targets[:15, k], scores[:15, k])
                           for k in range(4)])), 2)
    with metrics.aggregate(new_root=True) as agg:
        monkeypatch.setattr(crit_mod, "rank_and_world", lambda: (0, 1))
        outs = []
        for rows in ([0, 1, 2, 3, 4], [5, 6, 7, 8, 9, 10, 11], list(range(12, 18))):
            out = UamixClassificationCriterion._rank_slots(torch.sigmoid(logits[rows]),
                                                           torch.tensor(targets[rows]))
            outs.append({**out, "loss": 0.0, "sample_size": len(rows)})
        UamixClassificationCriterion.reduce_metrics(outs)  # fairseq-validate: one call
        assert agg.get_smoothed_values()["mAP"] == round(float(reference), 2)


# ------------------------------------------------------------------------ task pieces
def test_mixup_mixes_waveforms_and_targets_alike():
    g = torch.Generator().manual_seed(3)
    b, n = 6, 50
    lengths = torch.tensor([50, 40, 30, 50, 20, 45])
    wav = torch.randn(b, n, dtype=torch.float64, generator=g)
    wav = wav * (torch.arange(n)[None] < lengths[:, None])
    target = torch.nn.functional.one_hot(torch.tensor([0, 1, 2, 0, 1, 2]), 3).float()

    same, same_t, lam0, _ = mixup_waveforms(wav, lengths, target, 0.0, 10.0, g)
    assert torch.equal(same, wav) and torch.equal(same_t, target) and torch.all(lam0 == 1)

    mixed, mixed_t, lam, partner = mixup_waveforms(wav, lengths, target, 1.0, 10.0, g)
    assert torch.all((lam > 0) & (lam < 1))
    for i in range(b):
        j, k, m = int(partner[i]), float(lam[i]), int(lengths[i])
        torch.testing.assert_close(mixed_t[i], k * target[i] + (1 - k) * target[j])
        expected = k * wav[i, :m] + (1 - k) * wav[j, :m]  # partner cut to clip i's length
        torch.testing.assert_close(mixed[i, :m], expected - expected.mean())
        assert torch.all(mixed[i, m:] == 0)
    torch.testing.assert_close(mixed_t.sum(1), torch.ones(b))  # still distributions


def test_unknown_class_in_valid_split_is_an_error(corpus, tmp_path):
    data = _copy_corpus(corpus, str(tmp_path / "data"))
    labels = _lines(os.path.join(data, "valid.label"))
    labels[1] = "whale_song"
    _write_lines(os.path.join(data, "valid.label"), labels)
    task = _task(data)
    assert len(task.classes) == len(SEEN_CLASSES) == 15 and task.multilabel is False
    with pytest.raises(LabelError, match=r"valid\.label:2: class 'whale_song' is not one "
                                         r"of the 15 classes of the training split"):
        task.load_dataset("valid")


def test_label_lines_must_match_manifest(corpus, tmp_path):
    data = _copy_corpus(corpus, str(tmp_path / "data"))
    labels = _lines(os.path.join(data, "valid.label"))
    _write_lines(os.path.join(data, "valid.label"), labels[:-1])
    task = _task(data)
    with pytest.raises(LabelError, match=rf"valid\.label has {len(labels) - 1} label lines "
                                         rf"but .*valid\.tsv lists {len(labels)} clips"):
        task.load_dataset("valid")


def test_multilabel_is_detected_and_forced(corpus, tmp_path):
    data = _copy_corpus(corpus, str(tmp_path / "data"))
    valid = _lines(os.path.join(data, "valid.label"))
    valid[0] = "drum_a,voice_a"
    _write_lines(os.path.join(data, "valid.label"), valid)
    single = _task(data)  # the train split has one class per clip
    with pytest.raises(LabelError, match=r"valid\.label:1: 2 classes .* single-label task"):
        single.load_dataset("valid")
    forced = _task(data, multilabel=True)
    forced.load_dataset("valid")
    batch = forced.dataset("valid").collater([forced.dataset("valid")[0]])
    assert batch["target"].dtype == torch.bool
    assert batch["target"][0].nonzero().flatten().tolist() == [
        forced.classes.index("drum_a"), forced.classes.index("voice_a")]


# ------------------------------------------------------------------------ through fairseq
def _overrides(data, encoder, save_dir, **extra):
    args = {
        "task.data": data, "task.num_frames": 32, "model.encoder_checkpoint": encoder,
        "common.user_dir": USER_DIR, "common.log_interval": 1,
        "checkpoint.save_dir": save_dir, "dataset.batch_size": 6,
        "lr_scheduler.warmup_updates": 3, "lr_scheduler.lr_period_updates": 100,
    }
    args.update(extra)
    return [f"++{k}={v}" for k, v in args.items()]


def _start_train(overrides, cwd, config_name="finetune_demo"):
    cmd = [os.path.join(os.path.dirname(sys.executable), "fairseq-hydra-train"),
           "--config-dir", os.path.join(REPO, "configs"), "--config-name", config_name,
           *overrides]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


# The GPU recipes, shrunk to this CPU and the demo data.
ON_CPU = {**CPU_OVERRIDES, "dataset.train_subset": "train", "dataset.valid_subset": "valid"}
RECIPES = ("finetune_esc50", "finetune_spc2", "finetune_voxceleb1")


@pytest.fixture(scope="module")
def runs(corpus):
    """All fairseq-hydra-train runs of this file, side by side: single-label (demo
    config), multi-label (the AS-20K recipe), and one update of each other recipe."""
    root = corpus["root"]
    procs = {}
    # Its own copy of the encoder: the validate test removes it.
    encoder = str(root / "encoder_single.pth")
    shutil.copy(corpus["encoder"], encoder)
    # Plain training on one clip per class, the same full batch every update (and no
    # augmentation): memorising it must drive the loss down.
    single_data = _copy_corpus(corpus, str(root / "single_data"))
    manifest = read_manifest(os.path.join(single_data, "train.tsv"))
    labels = _lines(os.path.join(single_data, "train.label"))
    first = [labels.index(c) for c in sorted(set(labels))]
    with open(os.path.join(single_data, "tiny.tsv"), "w") as f:
        f.write(manifest.root + "\n" + "".join(
            f"{manifest.paths[i]}\t{manifest.sizes[i]}\n" for i in first))
    _write_lines(os.path.join(single_data, "tiny.label"), [labels[i] for i in first])
    procs["single"] = _start_train(_overrides(
        single_data, encoder, str(root / "single"), **{
            "dataset.train_subset": "tiny", "optimization.max_epoch": 25,
            "dataset.batch_size": len(first),
            "optimization.lr": "[0.003]",
            "task.specaug_freq_mask": 0, "task.specaug_time_mask": 0,
            "model.mask_t_prob": 0, "model.mask_f_prob": 0, "model.drop_path_rate": 0,
            "model.layer_decay": 1.0, "criterion.label_smoothing": 0}), cwd=str(root))

    # Multi-label: some clips also carry "voice_b"; the AS-20K recipe (mixup,
    # SpecAugment 48/192, patch dropout, BCE, mAP).
    multi_data = _copy_corpus(corpus, str(root / "multi"))
    for split in ("train", "valid"):
        labels = _lines(os.path.join(multi_data, f"{split}.label"))
        labels = [c + ",voice_b" if i % 3 == 0 and c != "voice_b" else c
                  for i, c in enumerate(labels)]
        _write_lines(os.path.join(multi_data, f"{split}.label"), labels)
    procs["multi"] = _start_train(_overrides(
        multi_data, corpus["encoder"], str(root / "multi_ckpt"), **ON_CPU, **{
            "optimization.max_epoch": 2}), cwd=str(root), config_name="finetune_as20k")

    for name in RECIPES:
        procs[name] = _start_train(_overrides(
            corpus["data"], corpus["encoder"], str(root / name), **ON_CPU, **{
                "optimization.max_update": 1}), cwd=str(root), config_name=name)
    out = {}
    for name, proc in procs.items():
        log, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"{name}:\n{log[-4000:]}"
        out[name] = dict(log=log)
    out["single"].update(encoder=encoder, data=single_data, save_dir=str(root / "single"))
    return out


def _epoch_values(log, tag, key):
    return [float(v) for v in re.findall(rf"\[{tag}\]\[INFO\] - epoch \d+ \|.*? {key} ([\d.]+)", log)]


def test_single_label_training_logs_accuracy_and_learns(runs):
    log = runs["single"]["log"]
    assert "15 classes from" in log and "single-label" in log
    accuracy = _epoch_values(log, "valid", "accuracy")
    assert len(accuracy) == 25 and all(0 <= a <= 100 for a in accuracy)
    assert "best_accuracy" in log
    losses = _epoch_values(log, "train", "loss")
    assert len(losses) == 25
    assert abs(losses[0] - math.log2(15)) < 0.01  # chance: the head starts near zero
    assert losses[-1] < 0.5 * losses[0], losses
    state = torch.load(os.path.join(runs["single"]["save_dir"], "checkpoint_last.pt"),
                       weights_only=False)
    assert state["task_state"]["classes"] == sorted(SEEN_CLASSES)
    assert state["model"]["head.weight"].shape == (15, 64)


def test_fairseq_validate_reproduces_the_last_validation(runs):
    log = runs["single"]["log"]
    last = re.findall(r"valid on 'valid' subset \| loss ([\d.]+) \| accuracy ([\d.]+)", log)[-1]
    os.remove(runs["single"]["encoder"])  # the checkpoint must not need it
    cmd = [os.path.join(os.path.dirname(sys.executable), "fairseq-validate"),
           runs["single"]["data"],
           "--path", os.path.join(runs["single"]["save_dir"], "checkpoint_last.pt"),
           "--task", "uamix_audio_classification", "--user-dir", USER_DIR,
           "--valid-subset", "valid", "--batch-size", "4", "--cpu"]
    env = dict(os.environ, OMP_NUM_THREADS="2", PYTHONWARNINGS="ignore")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    # Different batch size and default required_batch_size_multiple (8): same clips,
    # same numbers.
    found = re.findall(r"valid on 'valid' subset \| loss ([\d.]+) \| accuracy ([\d.]+)", out)
    assert found == [last], out[-3000:]


def test_multilabel_training_logs_map(runs):
    log = runs["multi"]["log"]
    assert "multi-label" in log
    maps = _epoch_values(log, "valid", "mAP")
    assert len(maps) == 2 and all(0 < m <= 100 for m in maps)
    assert "best_mAP" in log
    assert "accuracy" not in log.split("begin training epoch 1")[1]


@pytest.mark.parametrize("name", RECIPES)
def test_recipe_configs_compose_and_train(runs, name):
    log = runs[name]["log"]
    assert "num_updates 1" in log and "valid on 'valid' subset" in log, log[-2000:]
    assert re.search(r"valid on 'valid' subset \| loss [\d.]+ \| accuracy [\d.]+", log)


@pytest.mark.parametrize("name", ("finetune_as20k",) + RECIPES)
def test_recipe_lr_follows_the_base_lr_rule(name):
    """lr = blr 1e-3 x total batch / 256 (AudioMAE's rule) in every recipe."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(os.path.join(REPO, "configs", f"{name}.yaml"))
    batch = cfg.dataset.batch_size * cfg.distributed_training.distributed_world_size
    assert cfg.optimization.lr[0] == pytest.approx(1e-3 * batch / 256)


def test_esc50_five_fold_script_averages_the_folds(corpus, tmp_path):
    """examples/esc50/five_fold.sh on two generated folds: trains each, reads each fold's
    best accuracy from its checkpoint, and writes the mean."""
    data = str(tmp_path / "folds")
    os.makedirs(data)
    for f in (1, 2):
        for split, src in (("train", "train"), ("test", "valid")):
            for ext in ("tsv", "label"):
                shutil.copy(os.path.join(corpus["data"], f"{src}.{ext}"),
                            os.path.join(data, f"fold{f}_{split}.{ext}"))
    out = str(tmp_path / "out")
    env = dict(os.environ, FOLDS="1 2", CONFIG="finetune_demo", OMP_NUM_THREADS="1",
               PYTHONWARNINGS="ignore", PYTHON=sys.executable,
               UAMIX_TRAIN_CMD=os.path.join(os.path.dirname(sys.executable),
                                            "fairseq-hydra-train"))
    proc = subprocess.run(
        ["bash", os.path.join(REPO, "examples", "esc50", "five_fold.sh"), data, corpus["encoder"],
         out, "++task.num_frames=32", "++dataset.batch_size=6",
         "++optimization.max_update=2", "++lr_scheduler.warmup_updates=1"],
        env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    with open(os.path.join(out, "esc50_5fold.json")) as fh:
        summary = json.load(fh)
    assert summary["num_folds"] == 2 and summary["metric"] == "accuracy"
    folds = summary["folds"]
    assert set(folds) == {"1", "2"} and all(0 <= v <= 100 for v in folds.values())
    assert abs(summary["mean"] - (folds["1"] + folds["2"]) / 2) < 1e-9
    missing = subprocess.run(["bash", os.path.join(REPO, "examples", "esc50", "five_fold.sh"),
                              str(tmp_path), corpus["encoder"], out],
                             env=env, capture_output=True, text=True)
    assert missing.returncode == 2 and "fold1_train.tsv is missing" in missing.stderr
