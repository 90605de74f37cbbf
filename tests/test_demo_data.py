"""Tests of uamix_fairseq.demo_data: the deterministic synthetic demo corpus."""

import json
import os

import numpy as np
import pytest
import soundfile as sf

from uamix_fairseq.audio import load_audio
from uamix_fairseq.demo_data import CLASSES, main, make_demo_corpus, synthesize_clip
from uamix_fairseq.manifest import read_manifest

# Small enough to stay quick: 6 classes x 4 clips of one second.
CLIPS, SECONDS = 4, 1.0


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("demo")
    summary = make_demo_corpus(out_dir, clips_per_class=CLIPS, seconds=SECONDS, seed=0, valid_percent=0.2)
    return out_dir, summary


def _audio_files(out_dir):
    audio = os.path.join(out_dir, "audio")
    return sorted(
        os.path.relpath(os.path.join(folder, name), audio)
        for folder, _, files in os.walk(audio)
        for name in files
    )


def test_layout_and_counts(corpus):
    out_dir, summary = corpus
    files = _audio_files(out_dir)
    assert len(files) == len(CLASSES) * CLIPS == summary["num_clips"]
    assert files[0] == "chirps/chirps_000.wav"
    assert summary["classes"] == list(CLASSES) and len(CLASSES) == 6
    # round(0.2 * 24) = 5 valid clips.
    assert (summary["num_train"], summary["num_valid"]) == (19, 5)
    for split, count in (("train", 19), ("valid", 5)):
        assert len(read_manifest(out_dir / f"{split}.tsv")) == count
        assert sum(summary["class_counts"][split].values()) == count
    info = sf.info(str(out_dir / "audio" / files[0]))
    assert (info.samplerate, info.frames, info.channels, info.subtype) == (16000, 16000, 1, "PCM_16")


def test_labels_line_up_with_manifest_lines(corpus):
    out_dir, _ = corpus
    for split in ("train", "valid"):
        manifest = read_manifest(out_dir / f"{split}.tsv")
        labels = (out_dir / f"{split}.label").read_text().splitlines()
        assert len(labels) == len(manifest)
        for rel_path, label in zip(manifest.paths, labels):
            assert label in CLASSES
            assert rel_path.startswith(label + "/") and os.path.basename(rel_path).startswith(label + "_")


def test_same_seed_gives_identical_bytes(corpus, tmp_path):
    out_dir, _ = corpus
    again = tmp_path / "again"
    make_demo_corpus(again, clips_per_class=CLIPS, seconds=SECONDS, seed=0, valid_percent=0.2)
    assert _audio_files(again) == _audio_files(out_dir)
    for rel in _audio_files(out_dir):
        assert (again / "audio" / rel).read_bytes() == (out_dir / "audio" / rel).read_bytes(), rel
    for name in ("train.label", "valid.label"):
        assert (again / name).read_bytes() == (out_dir / name).read_bytes()
    for name in ("train.tsv", "valid.tsv"):  # identical apart from the root line
        assert (again / name).read_text().splitlines()[1:] == (out_dir / name).read_text().splitlines()[1:]


def test_other_seed_gives_other_audio():
    assert not np.array_equal(synthesize_clip("chirps", 0, 0.5, seed=0), synthesize_clip("chirps", 0, 0.5, seed=1))
    # A clip depends on (seed, class, index) only, not on how many clips are made.
    np.testing.assert_array_equal(synthesize_clip("clicks", 3, 0.5), synthesize_clip("clicks", 3, 0.5))


def test_no_clip_is_silent_or_clipped(corpus):
    out_dir, _ = corpus
    for rel in _audio_files(out_dir):
        wav = load_audio(out_dir / "audio" / rel).numpy()  # also runs validate_waveform
        assert np.sqrt(np.mean(wav**2)) > 1e-3, rel
        assert np.abs(wav).max() < 0.9, rel
        # The noise floor reaches even the samples before the onset.
        assert np.count_nonzero(wav[:200]) > 100, rel


def _clip_features(wav):
    """Five numbers on timbre and temporal structure, from 25 ms frames."""
    frames = wav[: wav.size // 400 * 400].reshape(-1, 400) * np.hanning(400)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2 + 1e-12
    energy = np.log(power.sum(1))
    active = energy > energy.max() - 30
    flatness = np.exp(np.log(power).mean(1)) / power.mean(1)
    peak_bin = np.log(power.argmax(1) + 1.0)
    return np.array([
        np.log(flatness[active]).mean(),  # tonal or noisy
        energy.std(),  # overall dynamics
        np.abs(np.diff(energy)).mean(),  # fast level changes (bursts, clicks)
        np.abs(np.diff(peak_bin[active])).mean(),  # moving spectral peak (sweeps)
        (power[:, 100:].sum(1) / power.sum(1))[active].mean(),  # share above 4 kHz
    ])


def test_classes_are_distinguishable(corpus):
    """Leave-one-out nearest class mean on simple features is far above chance (1/6)."""
    out_dir, _ = corpus
    features, labels = [], []
    for rel in _audio_files(out_dir):
        features.append(_clip_features(load_audio(out_dir / "audio" / rel).double().numpy()))
        labels.append(rel.split("/")[0])
    x = np.array(features)
    x = (x - x.mean(0)) / x.std(0)
    y = np.array(labels)
    correct = 0
    for i in range(len(x)):
        others = np.arange(len(x)) != i
        means = {c: x[others & (y == c)].mean(0) for c in CLASSES}
        guess = min(means, key=lambda c: np.sum((means[c] - x[i]) ** 2))
        correct += guess == y[i]
    assert correct / len(x) >= 0.5


def test_stale_files_are_refused(tmp_path):
    make_demo_corpus(tmp_path, clips_per_class=2, seconds=0.1, valid_percent=0.0)
    assert not (tmp_path / "valid.tsv").exists() and not (tmp_path / "valid.label").exists()
    # Re-running with the same settings is fine; fewer clips would leave strays.
    make_demo_corpus(tmp_path, clips_per_class=2, seconds=0.1, valid_percent=0.0)
    with pytest.raises(ValueError, match="would not write"):
        make_demo_corpus(tmp_path, clips_per_class=1, seconds=0.1, valid_percent=0.0)


def test_cli(tmp_path, capsys):
    code = main([str(tmp_path / "d"), "--clips-per-class", "2", "--seconds", "0.1", "--seed", "5"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["num_clips"] == 12 and summary["num_train"] + summary["num_valid"] == 12
    assert (tmp_path / "d" / "train.label").exists()
