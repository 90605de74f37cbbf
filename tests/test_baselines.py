"""No-learning baselines (evaluation/baselines.py), the padding diagnostic
(evaluation/diagnostics.py) and both as rows of uamix-fewshot / uamix-probe reports."""

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from uamix_fairseq.modules.audiomae import EncoderConfig, write_random_audiomae
from uamix_fairseq.tools.embed import EmbedConfig, baseline_manifest
from uamix_fairseq.evaluation import fewshot, probe
from uamix_fairseq.evaluation.baselines import fbank_stats
from uamix_fairseq.evaluation.diagnostics import format_diagnostics, pc1_diagnostic
from uamix_fairseq.audio.features import NORM_STATS, compute_fbank, normalize_fbank
from uamix_fairseq.labels import write_labels
from uamix_fairseq.manifest import write_manifest

FRAMES = 48


# ---------------------------------------------------------------------------
# the features
# ---------------------------------------------------------------------------


def _numpy_stats(fbank, valid):
    """Direct reference: numpy mean and std (ddof 0) of each row's first frames."""
    rows = []
    for x, v in zip(fbank, valid):
        real = np.asarray(x[:v], dtype=np.float64)
        rows.append(np.concatenate([real.mean(axis=0), real.std(axis=0)]))
    return np.stack(rows)


def test_fbank_stats_match_numpy_on_real_frames_only():
    rng = np.random.default_rng(0)
    fb = rng.normal(size=(3, 20, 128)).astype(np.float32)
    valid = np.array([20, 7, 1])
    fb[1, 7:] = 0.4675   # what normalised zero padding looks like
    fb[2, 1:] = 99.0     # anything beyond the real frames must not matter
    got = fbank_stats(fb, valid)
    assert got.shape == (3, 256) and got.dtype == np.float32
    np.testing.assert_allclose(got, _numpy_stats(fb, valid), rtol=1e-5, atol=1e-5)
    # one real frame: the mean is the frame, the spread is zero
    np.testing.assert_allclose(got[2, :128], fb[2, 0], rtol=1e-6)
    assert np.all(got[2, 128:] == 0)
    # model-input layout [B, 1, T, F] and torch input give the same numbers
    np.testing.assert_array_equal(fbank_stats(torch.from_numpy(fb)[:, None], valid), got)


def test_fbank_stats_hand_made_clip():
    # 3 real frames of 2 bins (bins padded out to a full row), 2 padded frames
    clip = np.zeros((1, 5, 2))
    clip[0, :3] = [[1.0, 4.0], [2.0, 4.0], [6.0, 1.0]]
    clip[0, 3:] = 10.0
    got = fbank_stats(clip, [3])[0]
    mean = [3.0, 3.0]
    std = [np.sqrt(((1 - 3) ** 2 + (2 - 3) ** 2 + (6 - 3) ** 2) / 3),
           np.sqrt((1 + 1 + 4) / 3)]
    np.testing.assert_allclose(got, mean + std, rtol=1e-6)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """Tones of three classes, 0.2-0.8 s: some shorter than the 48-frame crop (padded),
    some longer (cropped). Two random encoders of 48 frames."""
    root = tmp_path_factory.mktemp("baselines")
    rng = np.random.default_rng(1)
    (root / "audio").mkdir()
    entries, labels = [], []
    for c, f in enumerate((300, 1500, 5000)):
        for i in range(6):
            n = int(16000 * rng.uniform(0.2, 0.8))
            t = np.arange(n) / 16000
            wav = 0.3 * np.sin(2 * np.pi * f * t) + 0.01 * rng.standard_normal(n)
            sf.write(root / "audio" / f"c{c}_{i}.wav", wav.astype(np.float32), 16000,
                     subtype="PCM_16")
            entries.append((f"c{c}_{i}.wav", n))
            labels.append([f"tone{f}"])
    write_manifest(root / "toy.tsv", root / "audio", entries)
    write_labels(root / "toy.label", labels)
    cfg = EncoderConfig(embed_dim=32, depth=2, num_heads=1, num_frames=FRAMES)
    write_random_audiomae(root / "a.pth", cfg, seed=0)
    write_random_audiomae(root / "b.pth", cfg, seed=1)
    return root


def test_baseline_of_a_manifest_is_the_encoders_crop(toy):
    """The pipeline's features equal numpy statistics of each clip's own fbank, computed
    clip by clip: mean removed, cropped from the start to 48 frames, AudioSet
    normalisation, real frames only."""
    cfg = EmbedConfig(num_frames=FRAMES, batch_size=4)
    got = baseline_manifest("fbank_stats", toy / "toy.tsv", cfg, progress=False)
    mean, std = NORM_STATS["audioset"]
    files = sorted((toy / "audio").glob("*.wav"))
    assert got.shape == (len(files), 256)
    lines = (toy / "toy.tsv").read_text().splitlines()[1:]
    for row, line in enumerate(lines):
        wav, _ = sf.read(toy / "audio" / line.split("\t")[0], dtype="float64")
        wav = wav[:(FRAMES - 1) * 160 + 400]
        wav = wav - wav.mean()
        fb = compute_fbank(torch.from_numpy(wav).float(), subtract_mean=False)
        fb = normalize_fbank(fb[:FRAMES], mean, std).numpy()
        ref = _numpy_stats(fb[None], [min(fb.shape[0], FRAMES)])[0]
        np.testing.assert_allclose(got[row], ref, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------------
# the padding diagnostic
# ---------------------------------------------------------------------------


def test_pc1_diagnostic_finds_a_duration_direction():
    rng = np.random.default_rng(0)
    n, d = 200, 16
    duration = rng.uniform(0.5, 10.0, n)
    direction = rng.normal(size=d)
    direction /= np.linalg.norm(direction)
    x = 3.0 * (duration - duration.mean())[:, None] * direction + 0.1 * rng.normal(size=(n, d))
    got = pc1_diagnostic(x, duration)
    assert got["pc1_variance_share"] > 0.95
    assert got["pc1_duration_abs_corr"] > 0.999
    # reference computation: eigen-decomposition of the covariance, numpy's corrcoef
    cov = np.cov(x, rowvar=False)
    w, v = np.linalg.eigh(cov)
    assert got["pc1_variance_share"] == pytest.approx(w[-1] / w.sum(), rel=1e-9)
    scores = (x - x.mean(0)) @ v[:, -1]
    assert got["pc1_duration_abs_corr"] == pytest.approx(
        abs(np.corrcoef(scores, duration)[0, 1]), rel=1e-9)
    # the sign of the component does not matter, and durations unrelated to the
    # dominant direction give a small |r|
    assert pc1_diagnostic(-x, duration) == pytest.approx(got)
    unrelated = pc1_diagnostic(x, rng.permutation(duration))
    assert unrelated["pc1_duration_abs_corr"] < 0.3


def test_pc1_diagnostic_undefined_cases_and_text():
    assert pc1_diagnostic(np.ones((5, 3)), np.arange(5.0)) == {
        "pc1_variance_share": None, "pc1_duration_abs_corr": None}
    x = np.random.default_rng(0).normal(size=(6, 3))
    got = pc1_diagnostic(x, np.ones(6))
    assert got["pc1_variance_share"] is not None and got["pc1_duration_abs_corr"] is None
    text = format_diagnostics({"a": got}, ["a"], "6 clips of x.tsv")
    assert "6 clips of x.tsv" in text and "n/a" in text


# ---------------------------------------------------------------------------
# the command lines
# ---------------------------------------------------------------------------


def _common(toy, out):
    return ["--cache-dir", str(toy / "cache"), "--out", str(out), "--no-progress"]


def test_fewshot_scores_the_baseline_on_the_same_episodes(toy, tmp_path, capsys):
    out = tmp_path / "fs"
    argv = ["--encoder", str(toy / "a.pth"), "--encoder", str(toy / "b.pth"),
            "--manifest", str(toy / "toy.tsv"), "--ways", "3", "--shots", "1", "2",
            "--queries", "2", "--episodes", "20", "--baseline", "fbank_stats",
            "--classifier", "ncm", "logreg"] + _common(toy, out)
    assert fewshot.main(argv) == 0
    text = capsys.readouterr().out
    data = json.loads((out / "fewshot.json").read_text())
    rows = {(r["encoder"], r["classifier"], r["shots"]): r for r in data["results"]}
    assert {e for e, _, _ in rows} == {"a", "b", "fbank-stats"}
    assert data["settings"]["baselines"] == {"fbank-stats": "fbank_stats"}
    assert data["settings"]["embedding"]["num_frames"] == FRAMES  # the encoders' length
    entry = [e for e in data["encoders"] if e["name"] == "fbank-stats"][0]
    assert entry == {"name": "fbank-stats", "baseline": "fbank_stats", "num_frames": FRAMES}
    base = rows["fbank-stats", "ncm", 1]
    assert base["n"] == 20 and base["diff_vs"] == "a"
    # paired difference against the first encoder, episode by episode
    a = np.array(rows["a", "ncm", 1]["values"])
    assert base["diff_mean"] == pytest.approx(np.mean(np.array(base["values"]) - a))
    # the diagnostic: every row, printed below the table and stored in the JSON
    assert set(data["diagnostics"]) == {"a", "b", "fbank-stats"}
    for d in data["diagnostics"].values():
        assert 0 < d["pc1_variance_share"] <= 1 and 0 <= d["pc1_duration_abs_corr"] <= 1
    assert text.index("padding diagnostic") > text.index("fbank-stats")
    assert "|r(PC1, duration)|" in text

    # differences against the baseline instead: same episodes, opposite sign
    out2 = tmp_path / "fs_ref"
    assert fewshot.main(argv[:-len(_common(toy, out))] + _common(toy, out2) +
                        ["--reference", "fbank-stats"]) == 0
    data2 = json.loads((out2 / "fewshot.json").read_text())
    rows2 = {(r["encoder"], r["classifier"], r["shots"]): r for r in data2["results"]}
    assert rows2["a", "ncm", 1]["diff_vs"] == "fbank-stats"
    assert rows2["a", "ncm", 1]["diff_mean"] == pytest.approx(-base["diff_mean"])
    assert rows2["fbank-stats", "ncm", 1]["diff_vs"] is None
    assert rows2["a", "ncm", 1]["values"] == rows["a", "ncm", 1]["values"]
    assert (out2 / "fewshot.png").exists()


def test_probe_with_baseline_and_errors(toy, tmp_path, capsys):
    out = tmp_path / "probe"
    argv = ["--encoder", str(toy / "a.pth"), "--train-manifest", str(toy / "toy.tsv"),
            "--test-manifest", str(toy / "toy.tsv"), "--knn", "1",
            "--baseline", "fbank_stats"] + _common(toy, out)
    assert probe.main(argv) == 0
    data = json.loads((out / "probe.json").read_text())
    assert {r["encoder"] for r in data["results"]} == {"a", "fbank-stats"}
    assert set(data["diagnostics"]) == {"a", "fbank-stats"}
    # same clips train and test: 1-NN finds each clip itself
    knn = [r for r in data["results"] if r["encoder"] == "fbank-stats" and
           r["classifier"] == "knn1"][0]
    assert knn["mean"] == 1.0
    capsys.readouterr()
    assert probe.main(argv + ["--reference", "nope"]) == 2
    assert "--reference 'nope'" in capsys.readouterr().err
    assert probe.main(argv + ["--name", "fbank-stats"]) == 2
    assert "used twice" in capsys.readouterr().err


def test_baselines_are_scored_clean_under_noise(toy, tmp_path):
    out = tmp_path / "noisy"
    argv = ["--encoder", str(toy / "a.pth"), "--manifest", str(toy / "toy.tsv"),
            "--ways", "3", "--shots", "1", "--queries", "2", "--episodes", "5",
            "--baseline", "fbank_stats", "--attack-snr-db", "10",
            "--classifier", "ncm"] + _common(toy, out)
    assert fewshot.main(argv) == 0
    data = json.loads((out / "fewshot.json").read_text())
    by = {r["encoder"]: r for r in data["results"]}
    assert by["a"]["robust_mean"] is not None
    assert "robust_mean" not in by["fbank-stats"]
