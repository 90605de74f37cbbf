"""The monitor set through fairseq-hydra-train: logged with the valid metrics, choosing
checkpoint_best.pt, resumed with its start embeddings; neighbour purity in training."""

import os
import re

import pytest
import torch

from uamix_fairseq.modules.audiomae import load_audiomae
from uamix_fairseq.tools.embed import EmbedConfig, embed_manifest
from uamix_fairseq.labels import read_labels
from uamix_fairseq.modules.monitor import loo_knn_accuracy, loo_ncm_accuracy, targets_from_labels

from fairseq_helpers import make_tiny_setup, run_train, tiny_overrides


def _valid_lines(log):
    return [line for line in log.splitlines() if "valid on 'valid' subset" in line]


def _stat(line, key):
    m = re.search(rf"\| {key} ([-0-9.]+)", line)
    return float(m.group(1)) if m else None


def test_monitor_logged_and_selects_best(tmp_path):
    corpus, ckpt = make_tiny_setup(str(tmp_path))
    monitor = os.path.join(corpus, "heldout.tsv")
    save_dir = str(tmp_path / "ckpt")
    overrides = tiny_overrides(
        corpus, ckpt, save_dir, **{
            "task.monitor_manifest": monitor, "task.monitor_knn_k": 3,
            "checkpoint.best_checkpoint_metric": "monitor_knn",
            "checkpoint.maximize_best_checkpoint_metric": "true",
            "dataset.validate_interval_updates": 2, "checkpoint.save_interval_updates": 2,
            "model.freeze_schedule": "'[(0, 4)]'", "optimization.lr": "[0.01]"})
    code, log = run_train(overrides, cwd=str(tmp_path))
    assert code == 0, log[-4000:]
    valid = _valid_lines(log)
    assert len(valid) >= 3, log[-3000:]
    knn = [_stat(line, "monitor_knn") for line in valid]
    ncm = [_stat(line, "monitor_ncm") for line in valid]
    drift = [_stat(line, "monitor_drift") for line in valid]
    assert None not in knn + ncm + drift, valid
    assert all(d > 0 for d in drift)  # every block trains at a high lr: it moves
    # nn_purity appears in training (train.label exists beside train.tsv).
    assert re.search(r"nn_purity[= ]\d", log)

    # checkpoint_best.pt holds the encoder whose monitor k-NN was highest, and the
    # logged scores are what an independent embedding of that encoder gives.
    best = torch.load(os.path.join(save_dir, "checkpoint_best.pt"), weights_only=False)
    best_update = best["optimizer_history"][-1]["num_updates"]
    by_update = {int(_stat(line, "num_updates")): (k, n)
                 for line, k, n in zip(valid, knn, ncm)}
    top = max(k for k, _ in by_update.values())
    assert by_update[best_update][0] == top
    encoder = load_audiomae(os.path.join(save_dir, "checkpoint_best.pt"), num_frames=32)
    emb = torch.tensor(embed_manifest(encoder, monitor, EmbedConfig(num_frames=32),
                                      progress=False))
    _, targets = targets_from_labels(read_labels(monitor), "heldout.label")
    assert loo_knn_accuracy(emb, targets, 3) == pytest_approx(by_update[best_update][0])
    assert loo_ncm_accuracy(emb, targets) == pytest_approx(by_update[best_update][1])
    # The start embeddings travel in the task state.
    assert best["task_state"]["monitor_start"].shape == emb.shape


def pytest_approx(value):
    return pytest.approx(value, abs=0.011)  # logged with 2 decimals


def test_monitor_missing_file_is_named(tmp_path):
    corpus, ckpt = make_tiny_setup(str(tmp_path))
    overrides = tiny_overrides(corpus, ckpt, str(tmp_path / "c"),
                               **{"task.monitor_manifest": str(tmp_path / "nope.tsv")})
    code, log = run_train(overrides, cwd=str(tmp_path))
    assert code != 0
    assert "task.monitor_manifest=" in log and "nope.tsv does not exist" in log


def test_several_monitor_sets_each_logged_under_its_stem(tmp_path):
    """task.monitor_manifest=a.tsv,b.tsv: the first set keeps the plain keys, the second
    gets _<stem>; its logged scores are what an independent embedding gives."""
    corpus, ckpt = make_tiny_setup(str(tmp_path))
    # The second set: 14 held-out clips (the first 7 sources by name, 2 clips each)
    # under another name (the tiny train split has sources with a single clip, too few
    # for a monitor class).
    first, second = os.path.join(corpus, "heldout.tsv"), os.path.join(corpus, "train_like.tsv")
    with open(first) as f:
        lines = f.read().splitlines()
    with open(os.path.join(corpus, "heldout.label")) as f:
        labels = f.read().splitlines()
    keep = sorted(range(len(labels)), key=lambda i: labels[i])[:14]  # 7 sources x 2 clips
    with open(second, "w") as f:
        f.write("\n".join([lines[0]] + [lines[1 + i] for i in keep]) + "\n")
    with open(os.path.join(corpus, "train_like.label"), "w") as f:
        f.write("".join(labels[i] + "\n" for i in keep))
    save_dir = str(tmp_path / "ckpt")
    overrides = tiny_overrides(
        corpus, ckpt, save_dir, **{
            "task.monitor_manifest": f"'{first},{second}'", "task.monitor_knn_k": 3,
            "dataset.validate_interval_updates": 2, "checkpoint.save_interval_updates": 2,
            "optimization.max_update": 4})
    code, log = run_train(overrides, cwd=str(tmp_path))
    assert code == 0, log[-4000:]
    last = _valid_lines(log)[-1]
    for key in ("monitor_knn", "monitor_ncm", "monitor_drift",
                "monitor_knn_train_like", "monitor_ncm_train_like", "monitor_drift_train_like"):
        assert _stat(last, key) is not None, (key, last)
    state = torch.load(os.path.join(save_dir, "checkpoint_last.pt"), weights_only=False)
    encoder = load_audiomae(os.path.join(save_dir, "checkpoint_last.pt"), num_frames=32)
    for manifest, suffix in ((first, ""), (second, "_train_like")):
        emb = torch.tensor(embed_manifest(encoder, manifest, EmbedConfig(num_frames=32),
                                          progress=False))
        _, targets = targets_from_labels(read_labels(manifest), manifest)
        assert loo_knn_accuracy(emb, targets, 3) == pytest_approx(_stat(last, "monitor_knn" + suffix))
        assert loo_ncm_accuracy(emb, targets) == pytest_approx(_stat(last, "monitor_ncm" + suffix))
    assert state["task_state"]["monitor_start"].shape[0] == len(read_labels(first))
    assert [t.shape[0] for t in state["task_state"]["monitor_start_more"]] == \
        [len(read_labels(second))]


def test_monitor_sets_need_distinct_names():
    from uamix_fairseq.modules.monitor import MonitorError
    from uamix_fairseq.tasks.monitoring import monitor_sets

    assert monitor_sets("") == []
    assert monitor_sets("/d/ufo.tsv, /e/my-set.tsv") == [("/d/ufo.tsv", ""),
                                                         ("/e/my-set.tsv", "_my_set")]
    with pytest.raises(MonitorError, match="same file name"):
        monitor_sets("/a/x.tsv,/b/x.tsv")
