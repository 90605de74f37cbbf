"""Whole-clip embeddings (``EmbedConfig.windows``, ``--windows``): the clip is cut into
consecutive crops from its start (``embed.clip_windows``) and the crops' embeddings are
averaged. Checked by hand on the cutting, and against an independent reference: each
crop written to its own file and embedded alone with one window."""

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from uamix_fairseq.audio.features import num_frames
from uamix_fairseq.evaluation import fewshot
from uamix_fairseq.labels import write_labels
from uamix_fairseq.manifest import write_manifest
from uamix_fairseq.modules.audiomae import EncoderConfig, write_random_audiomae
from uamix_fairseq.tools.embed import (EmbedConfig, baseline_cache_key, baseline_manifest,
                                       cache_key, clip_windows, embed_manifest,
                                       load_encoder)
from uamix_fairseq.tools.export_embeddings import export_embeddings

CFG = EncoderConfig(embed_dim=32, depth=2, num_heads=2, num_frames=32)
WINDOW = EmbedConfig(num_frames=32).frontend().max_samples  # 32 frames: 5360 samples


def test_clip_windows_by_hand():
    wav = torch.arange(2 * 20, dtype=torch.float64).reshape(2, 20)
    wav[1, 3:] = 0  # the second clip is 3 samples long, zero-padded
    windows, lengths, owner = clip_windows(wav, [20, 3], window=6, max_windows=8,
                                           min_tail=2)
    # 20 samples: three whole windows of 6 and a tail of 2; 3 samples: one window
    assert owner.tolist() == [0, 0, 0, 0, 1]
    assert lengths.tolist() == [6, 6, 6, 2, 3]
    assert windows[:3].tolist() == wav[0, :18].reshape(3, 6).tolist()
    assert windows[3].tolist() == [18.0, 19.0, 0.0, 0.0, 0.0, 0.0]
    assert windows[4].tolist() == [20.0, 21.0, 22.0, 0.0, 0.0, 0.0]
    # a tail under min_tail is left out, but a clip always keeps one window
    _, lengths, owner = clip_windows(wav, [20, 3], window=6, max_windows=8, min_tail=3)
    assert owner.tolist() == [0, 0, 0, 1] and lengths.tolist() == [6, 6, 6, 3]
    # at most max_windows
    _, lengths, owner = clip_windows(wav, [20, 3], window=6, max_windows=2, min_tail=2)
    assert owner.tolist() == [0, 0, 1] and lengths.tolist() == [6, 6, 3]
    # clips no longer than one window are returned as they are
    short = wav[:, :5]
    same, lengths, owner = clip_windows(short, [5, 3], window=6, max_windows=8)
    assert same is short and lengths.tolist() == [5, 3] and owner.tolist() == [0, 1]


def _zero_mean_window(rng, freq):
    t = np.arange(WINDOW) / 16000
    x = 0.3 * np.sin(2 * np.pi * freq * t) + 0.05 * rng.standard_normal(WINDOW)
    return (x - x.mean()).astype(np.float32)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Clips of 2.5, 1 and 0.6 windows, and each window of them as its own file (the
    half window at the end of the long clip too). Every window has zero mean, so removing the clip's mean (over the decoded crop) and
    removing each window file's mean change nothing: the two paths see the same samples."""
    root = tmp_path_factory.mktemp("windows")
    rng = np.random.default_rng(0)
    def part(freq, n):
        x = _zero_mean_window(rng, freq)[:n]
        return x - x.mean()

    clips = {"long": [part(300, WINDOW), part(1200, WINDOW), part(3000, WINDOW // 2)],
             "one": [part(700, WINDOW)],
             "short": [part(2000, int(0.6 * WINDOW))]}
    (root / "audio").mkdir()
    entries, parts = [], []
    for name, pieces in clips.items():
        wav = np.concatenate(pieces)
        sf.write(root / "audio" / f"{name}.wav", wav, 16000, subtype="FLOAT")
        entries.append((f"{name}.wav", len(wav)))
        parts.append([])
        for k, p in enumerate(pieces):
            sf.write(root / "audio" / f"{name}_w{k}.wav", p, 16000, subtype="FLOAT")
            parts[-1].append((f"{name}_w{k}.wav", len(p)))
    write_manifest(root / "clips.tsv", root / "audio", entries)
    write_manifest(root / "parts.tsv", root / "audio", [e for p in parts for e in p])
    write_random_audiomae(root / "enc.pth", CFG, seed=0)
    return root, [[num_frames(n) for _, n in p] for p in parts]


def _mean_per_clip(rows, frames):
    """Each clip's rows averaged with weights proportional to their real frames."""
    out, i = [], 0
    for f in frames:
        out.append(np.average(rows[i:i + len(f)], axis=0, weights=f))
        i += len(f)
    return np.stack(out)


@pytest.mark.parametrize("pad_mode", ["zero", "repeat"])
def test_whole_clip_embedding_is_the_mean_of_its_crops(corpus, pad_mode):
    root, counts = corpus
    assert counts == [[32, 32, 15], [32], [num_frames(int(0.6 * WINDOW))]]
    one = EmbedConfig(num_frames=32, batch_size=2, pad_mode=pad_mode)
    many = EmbedConfig(num_frames=32, batch_size=2, pad_mode=pad_mode, windows=8)
    enc = load_encoder(root / "enc.pth", one)
    whole = embed_manifest(enc, root / "clips.tsv", many, progress=False)
    reference = _mean_per_clip(embed_manifest(enc, root / "parts.tsv", one, progress=False),
                               counts)
    np.testing.assert_allclose(whole, reference, rtol=1e-4, atol=1e-5)
    first = embed_manifest(enc, root / "clips.tsv", one, progress=False)
    assert not np.allclose(whole[0], first[0], atol=1e-3)  # the long clip changed
    np.testing.assert_allclose(whole[1:], first[1:], rtol=1e-4, atol=1e-5)  # one window
    # the no-learning baseline is averaged over the same crops
    base = baseline_manifest("fbank_stats", root / "clips.tsv", many, progress=False)
    base_ref = _mean_per_clip(
        baseline_manifest("fbank_stats", root / "parts.tsv", one, progress=False), counts)
    np.testing.assert_allclose(base, base_ref, rtol=1e-4, atol=1e-5)
    assert cache_key(root / "enc.pth", root / "clips.tsv", many) != \
        cache_key(root / "enc.pth", root / "clips.tsv", one)
    assert baseline_cache_key("fbank_stats", root / "clips.tsv", many) != \
        baseline_cache_key("fbank_stats", root / "clips.tsv", one)


def test_fewshot_and_embed_take_windows(corpus, tmp_path, capsys):
    root, counts = corpus
    # a labelled copy of the parts: 5 clips, 2 classes, enough for 2-way 1-shot
    labels = [["low"], ["low"], ["high"], ["high"], ["high"]]
    write_labels(root / "parts.label", labels)
    enc = str(root / "enc.pth")
    out = tmp_path / "fs"
    argv = ["--encoder", enc, "--encoder", enc, "--readout", "default",
            "--readout", "windows=3", "--manifest", str(root / "parts.tsv"), "--ways", "2",
            "--shots", "1", "--queries", "1", "--episodes", "4", "--classifier", "ncm",
            "--baseline", "fbank_stats", "--out", str(out), "--no-progress"]
    assert fewshot.main(argv) == 0
    data = json.loads((out / "fewshot.json").read_text())
    assert [e["name"] for e in data["encoders"]][:2] == ["enc", "enc@windows=3"]
    assert data["settings"]["embeddings"]["enc@windows=3"]["windows"] == 3
    capsys.readouterr()
    assert fewshot.main(argv[:6] + ["--windows", "0"] + argv[6:]) == 2
    assert "--windows must be at least 1" in capsys.readouterr().err
    bad = argv[:4] + ["--readout", "windows=0"] + argv[6:]
    assert fewshot.main(bad) == 2
    assert "windows must be a whole number" in capsys.readouterr().err
    assert fewshot.main(argv + ["--attack-snr-db", "10"]) == 2
    assert "--windows 1" in capsys.readouterr().err
    # uamix-embed writes the same embeddings as the library call
    summary = export_embeddings(enc, tmp_path / "e.npy", manifest=str(root / "clips.tsv"),
                                windows=8, pad_mode="repeat", progress=False)
    cfg = EmbedConfig(num_frames=32, pad_mode="repeat", windows=8)
    want = embed_manifest(load_encoder(enc, cfg), root / "clips.tsv", cfg, progress=False)
    np.testing.assert_array_equal(np.load(tmp_path / "e.npy"), want)
    assert summary["num_clips"] == 3
