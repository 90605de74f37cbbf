"""The dataset recipes of examples/<dataset>/run.sh, end to end on tiny fake trees with
the real layouts: manifests, training (1-2 updates of the real config, shrunk to this
CPU), evaluation, and the files and numbers each recipe promises."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from fairseq_helpers import CPU_OVERRIDES, REPO
from uamix_fairseq.modules.audiomae import EncoderConfig, write_random_audiomae

BIN = os.path.dirname(sys.executable)
TINY = ["task.num_frames=32", "dataset.batch_size=4", "optimization.max_update=2",
        "optimization.max_epoch=0", "lr_scheduler.warmup_updates=1",
        "dataset.required_batch_size_multiple=1", "common.log_interval=1"]
FEWSHOT = "--ways 2 --shots 1 --queries 1 --episodes 3"


def _wav(path, seconds=0.5, rate=16000, seed=0):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    rng = np.random.default_rng(abs(hash(path)) % 2**32 + seed)
    sf.write(path, (0.1 * rng.standard_normal(int(seconds * rate))).astype(np.float32), rate,
             subtype="PCM_16")


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("enc") / "pretrained.pth")
    write_random_audiomae(path, EncoderConfig(embed_dim=32, depth=2, num_heads=1,
                                              num_frames=128), seed=0)
    return path


def _run(script, args, extra=(), **env):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore",
               PYTHON=sys.executable, UAMIX_TRAIN_CMD=os.path.join(BIN, "fairseq-hydra-train"),
               TRAIN_OVERRIDES=" ".join([f"{k}={v}" for k, v in CPU_OVERRIDES.items()]
                                        + TINY + list(extra)),
               FEWSHOT_ARGS=FEWSHOT, **env)
    proc = subprocess.run(["bash", os.path.join(REPO, "examples", script), *map(str, args)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return proc


def _fewshot(out):
    with open(os.path.join(out, "fewshot", "fewshot.json")) as f:
        result = json.load(f)
    assert os.path.exists(os.path.join(out, "fewshot", "fewshot.png"))
    return result


def test_esc50_recipe(tmp_path, encoder):
    src = tmp_path / "ESC-50-master"
    os.makedirs(src / "meta")
    rows = ["filename,fold,target,category,esc10,src_file,take"]
    for fold in range(1, 6):
        for target, category in ((0, "dog"), (1, "rooster"), (2, "rain")):
            name = f"{fold}-{100 + 3 * fold + target}-A-{target}.wav"
            rows.append(f"{name},{fold},{target},{category},False,{100 + fold},A")
            _wav(str(src / "audio" / name), rate=44100)
    (src / "meta" / "esc50.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "out"
    _run("esc50/run.sh", [src, encoder, out], FOLDS="1 2")
    with open(out / "finetune" / "esc50_5fold.json") as f:
        summary = json.load(f)
    assert summary["num_folds"] == 2 and summary["metric"] == "accuracy"
    assert (out / "data" / "fold1_train.tsv").exists() and (out / "data" / "all.tsv").exists()
    result = _fewshot(out)
    assert result["settings"]["manifest"].endswith("all.tsv")
    assert {e["name"] for e in result["encoders"]} == {"pretrained", "fbank-stats"}


def test_speechcommands_recipe(tmp_path, encoder):
    src = tmp_path / "speech_commands_v0.02"
    words, speakers = ("yes", "no", "up"), ("0a7c2a8d", "1b4c9b89", "c1d39ce8", "d0e1f2a3")
    for w in words:
        for s in speakers:
            _wav(str(src / w / f"{s}_nohash_0.wav"))
    _wav(str(src / "_background_noise_" / "white_noise.wav"))
    (src / "validation_list.txt").write_text("".join(f"{w}/1b4c9b89_nohash_0.wav\n" for w in words))
    (src / "testing_list.txt").write_text("".join(f"{w}/{s}_nohash_0.wav\n" for w in words
                                                  for s in speakers[2:]))
    out = tmp_path / "out"
    _run("speechcommands/run.sh", [src, encoder, out], VALIDATE_ARGS="--cpu")
    assert (out / "finetune" / "checkpoints" / "checkpoint_best.pt").exists()
    test_log = (out / "finetune" / "test.log").read_text()
    assert "valid on 'test' subset" in test_log and "accuracy" in test_log
    result = _fewshot(out)
    assert result["settings"]["manifest"].endswith("test.tsv")


def test_voxceleb1_recipe(tmp_path, encoder):
    src = tmp_path / "vox1"
    lines = []
    for i in range(1, 4):
        for video, split in (("aaa", 1), ("bbb", 2), ("ccc", 3), ("ddd", 3)):
            rel = f"id1000{i}/{video}{i}/00001.wav"
            lines.append(f"{split} {rel}")
            _wav(str(src / "wav" / rel))
    (src / "iden_split.txt").write_text("\n".join(lines) + "\n")
    second = tmp_path / "tuned.pth"
    second.write_bytes(open(encoder, "rb").read())
    out = tmp_path / "out"
    _run("voxceleb1/run.sh", [src, out, encoder, second], NUM_FRAMES="32")
    result = _fewshot(out)
    assert {e["name"] for e in result["encoders"]} == {"pretrained", "tuned", "fbank-stats"}
    assert all(r["diff_vs"] == "pretrained" for r in result["results"]
               if r["encoder"] != "pretrained")


def test_audioset20k_recipe(tmp_path, encoder):
    src = tmp_path / "audioset"
    src.mkdir()
    (src / "class_labels_indices.csv").write_text(
        'index,mid,display_name\n0,/m/09x0r,"Speech"\n1,/m/04rlf,"Music"\n'
        '2,/m/0btp2,"Traffic noise, roadway noise"\n')
    header = "# Segments csv\n# num_ytids=4\n# YTID, start_seconds, end_seconds, positive_labels\n"
    labels = ['"/m/09x0r"', '"/m/04rlf"', '"/m/09x0r,/m/0btp2"', '"/m/0btp2,/m/04rlf"']
    for name, prefix, n in (("balanced_train_segments.csv", "tr", 8), ("eval_segments.csv", "ev", 6)):
        rows = [f"{prefix}{i:09d}, 0.000, 10.000, {labels[i % 4]}" for i in range(n)]
        (src / name).write_text(header + "\n".join(rows) + "\n")
        for i in range(n):
            _wav(str(src / "audio" / f"{prefix}{i:09d}.wav"))
    out = tmp_path / "out"
    _run("audioset20k/run.sh", [src, encoder, out],
         extra=["dataset.validate_interval_updates=2", "checkpoint.save_interval_updates=2"],
         TUNE_OVERRIDES="model.proj_hidden_dim=32 model.pred_hidden_dim=32 "
                        "model.proj_out_dim=16 model.freeze_schedule='[(0,0),(1,1)]'",
         PROBE_ARGS="--knn 3 --num-frames 32", FINETUNE="1")
    assert (out / "encoders" / "uamix.pth").exists()
    with open(out / "probe" / "probe.json") as f:
        probe = json.load(f)
    names = {e["name"] for e in probe["encoders"]}
    assert names == {"start", "uamix", "fbank-stats"}
    assert "num_updates 2" in (out / "tune" / "train.log").read_text()
    finetune_log = (out / "finetune" / "train.log").read_text()
    assert "mAP" in finetune_log and "uamix.pth" in finetune_log


def test_recipes_explain_their_arguments(tmp_path):
    for script in ("esc50/run.sh", "speechcommands/run.sh", "voxceleb1/run.sh",
                   "audioset20k/run.sh"):
        proc = subprocess.run(["bash", os.path.join(REPO, "examples", script)],
                              capture_output=True, text=True)
        assert proc.returncode == 2 and "Usage:" in proc.stderr, script
    proc = subprocess.run(["bash", os.path.join(REPO, "examples", "esc50", "run.sh"),
                           str(tmp_path / "nowhere"), "x", str(tmp_path / "o")],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "ESC50_MASTER" in proc.stderr and "not a folder" in proc.stderr
