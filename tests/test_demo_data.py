"""Tests of examples/demo/demo_data.py: the deterministic synthetic demo corpus."""

import json
import os

import numpy as np
import pytest
import soundfile as sf
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import demo_data
from uamix_fairseq.audio.decode import load_audio
from demo_data import (CLASSES, HELDOUT_CLASSES, SEEN_CLASSES, SHORTEST_FRACTION, main,
                                     make_demo_corpus, synthesize_clip)
from uamix_fairseq.audio.features import compute_fbank
from uamix_fairseq.manifest import read_manifest

# Small enough to stay quick: 15 seen classes x 4 clips, 10 held-out x 3, of 0.7-1 s.
CLIPS, HELDOUT_CLIPS, SECONDS = 4, 3, 1.0
SPLITS = ("train", "valid", "heldout")


def _make(out_dir, seed=0):
    return make_demo_corpus(out_dir, clips_per_class=CLIPS, seconds=SECONDS, seed=seed, valid_percent=0.2,
                            heldout_clips_per_class=HELDOUT_CLIPS)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("demo")
    return out_dir, _make(out_dir)


def _audio_files(out_dir):
    audio = os.path.join(out_dir, "audio")
    return sorted(
        os.path.relpath(os.path.join(folder, name), audio).replace(os.sep, "/")
        for folder, _, files in os.walk(audio)
        for name in files
    )


def test_layout_and_counts(corpus):
    out_dir, summary = corpus
    files = _audio_files(out_dir)
    assert len(files) == 15 * CLIPS + 10 * HELDOUT_CLIPS == summary["num_clips"] == 90
    assert "voice_a/voice_a_003.wav" in files
    assert "voice_d/voice_d_002.wav" in files
    assert "voice_d/voice_d_003.wav" not in files
    assert summary["classes"] == list(CLASSES)
    assert (summary["seen_classes"], summary["heldout_classes"]) == (list(SEEN_CLASSES), list(HELDOUT_CLASSES))
    # round(0.2 * 60 seen clips) = 12 valid clips, at most one per class (spread evenly).
    assert (summary["num_train"], summary["num_valid"], summary["num_heldout"]) == (48, 12, 30)
    assert max(summary["class_counts"]["valid"].values()) == 1
    assert summary["class_counts"]["heldout"] == {c: HELDOUT_CLIPS for c in HELDOUT_CLASSES}
    for split in SPLITS:
        assert len(read_manifest(out_dir / f"{split}.tsv")) == summary[f"num_{split}"]
        assert sum(summary["class_counts"][split].values()) == summary[f"num_{split}"]
    info = sf.info(str(out_dir / "audio" / files[0]))
    assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
    json.dumps(summary)  # serialisable as it is


def test_labels_and_sizes_line_up_with_manifest_lines(corpus):
    out_dir, _ = corpus
    for split, allowed in (("train", SEEN_CLASSES), ("valid", SEEN_CLASSES), ("heldout", HELDOUT_CLASSES)):
        manifest = read_manifest(out_dir / f"{split}.tsv")
        labels = (out_dir / f"{split}.label").read_text().splitlines()
        assert len(labels) == len(manifest)
        for i, (rel_path, label) in enumerate(zip(manifest.paths, labels)):
            assert label in allowed, (split, label)
            assert rel_path.startswith(label + "/") and os.path.basename(rel_path).startswith(label + "_")
            assert sf.info(manifest.full_path(i)).frames == manifest.sizes[i]


def test_seen_and_heldout_classes_and_clips_are_disjoint(corpus):
    out_dir, _ = corpus
    assert CLASSES == SEEN_CLASSES + HELDOUT_CLASSES and not set(SEEN_CLASSES) & set(HELDOUT_CLASSES)
    assert len(HELDOUT_CLASSES) >= 5  # 5-way few-shot on the held-out classes
    paths = {split: set(read_manifest(out_dir / f"{split}.tsv").paths) for split in SPLITS}
    assert not paths["train"] & paths["valid"] and not (paths["train"] | paths["valid"]) & paths["heldout"]
    assert paths["train"] | paths["valid"] | paths["heldout"] == set(_audio_files(out_dir))
    assert {p.split("/")[0] for p in paths["train"]} == set(SEEN_CLASSES)
    assert {p.split("/")[0] for p in paths["heldout"]} == set(HELDOUT_CLASSES)


def test_same_seed_gives_identical_bytes(corpus, tmp_path):
    out_dir, _ = corpus
    again = tmp_path / "again"
    _make(again)
    assert _audio_files(again) == _audio_files(out_dir)
    for rel in _audio_files(out_dir):
        assert (again / "audio" / rel).read_bytes() == (out_dir / "audio" / rel).read_bytes(), rel
    for split in SPLITS:
        assert (again / f"{split}.label").read_bytes() == (out_dir / f"{split}.label").read_bytes()
        # identical apart from the root line
        assert (again / f"{split}.tsv").read_text().splitlines()[1:] == (out_dir / f"{split}.tsv").read_text().splitlines()[1:]


def test_other_seed_gives_other_audio():
    for name in ("voice_a", "drum_e"):
        assert not np.array_equal(synthesize_clip(name, 0, 0.5, seed=0), synthesize_clip(name, 0, 0.5, seed=1))
    # A clip depends on (seed, class, index) only, not on how many clips are made.
    np.testing.assert_array_equal(synthesize_clip("bell_d", 3, 0.5), synthesize_clip("bell_d", 3, 0.5))


def test_lengths_vary_within_the_documented_range(corpus):
    out_dir, summary = corpus
    assert summary["min_seconds"] == pytest.approx(SHORTEST_FRACTION * SECONDS) and SHORTEST_FRACTION == 0.7
    sizes = np.array([sf.info(str(out_dir / "audio" / rel)).frames for rel in _audio_files(out_dir)])
    assert sizes.min() >= round(0.7 * 16000) and sizes.max() <= 16000
    assert sizes.max() - sizes.min() > 0.15 * 16000  # 90 uniform draws over 0.3 s
    # The shortest 0.5 s clips still give the 32 frames the fairseq tests crop.
    assert min(synthesize_clip(c, i, 0.5).size for c in CLASSES for i in range(3)) >= 400 + 31 * 160


def test_no_clip_is_silent_or_clipped(corpus):
    out_dir, _ = corpus
    for rel in _audio_files(out_dir):
        wav = load_audio(out_dir / "audio" / rel).numpy()  # also runs validate_waveform
        assert np.sqrt(np.mean(wav**2)) > 1e-3, rel
        assert np.abs(wav).max() <= 10 ** (-1 / 20) + 1e-4, rel  # peaks at -20..-1 dBFS
        assert np.abs(wav).max() >= 10 ** (-20 / 20) - 1e-4, rel
        # The background noise reaches even the samples before the first event.
        assert np.count_nonzero(wav[:200]) > 100, rel


def test_distractors_come_from_the_same_split(monkeypatch):
    calls = []
    real = demo_data._foreground

    def recording(class_name, *args):
        calls.append(class_name)
        return real(class_name, *args)

    monkeypatch.setattr(demo_data, "_foreground", recording)
    for own, split in ((HELDOUT_CLASSES[0], HELDOUT_CLASSES), (SEEN_CLASSES[0], SEEN_CLASSES)):
        distractors = []
        for i in range(30):
            calls.clear()
            synthesize_clip(own, i, 0.3)
            assert calls[0] == own and len(calls) <= 2
            distractors += calls[1:]
        assert 3 <= len(distractors) <= 20  # about 30% of the clips
        assert all(d in split and d != own for d in distractors), distractors


def _peak_frequencies(samples, count, sample_rate=16000):
    """The ``count`` strongest spectral peaks (Hz) of ``samples``, lowest first."""
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(samples.size)))
    freqs = np.fft.rfftfreq(samples.size, d=1.0 / sample_rate)
    is_peak = (spectrum[1:-1] > spectrum[:-2]) & (spectrum[1:-1] >= spectrum[2:])
    peaks = np.flatnonzero(is_peak) + 1
    return np.sort(freqs[peaks[np.argsort(spectrum[peaks])[::-1][:count]]])


def test_families_and_split_of_the_sources():
    """Five families of five sources: the first three of each are seen, two held out."""
    assert len(SEEN_CLASSES) == 15 and len(HELDOUT_CLASSES) == 10
    for family in demo_data.FAMILIES:
        assert [c for c in SEEN_CLASSES if c.startswith(family + "_")] == [f"{family}_{x}" for x in "abc"]
        assert [c for c in HELDOUT_CLASSES if c.startswith(family + "_")] == [f"{family}_{x}" for x in "de"]
        assert all(demo_data.SOURCES[f"{family}_{x}"].family == family for x in "abcde")


def test_sources_are_pinned_and_do_not_depend_on_the_corpus_seed(tmp_path):
    """A source is the same voice or instrument in every corpus and every version that
    keeps SOURCE_SEED: values recorded when the corpus was made (2026-12-07)."""
    assert demo_data.SOURCES["voice_b"].register == pytest.approx(263.7029634)
    assert demo_data.SOURCES["bell_d"].ratios[1] == pytest.approx(4.8755944)
    assert demo_data.SOURCES["drum_e"].ratios[0] == pytest.approx(0.1618318)
    before = {name: demo_data.SOURCES[name].register for name in CLASSES}
    make_demo_corpus(tmp_path, clips_per_class=1, heldout_clips_per_class=1, seconds=0.1,
                     seed=7, valid_percent=0.0)
    assert {name: demo_data.SOURCES[name].register for name in CLASSES} == before
    # Registers are drawn per source: no two sources of a family share one.
    for family in demo_data.FAMILIES:
        registers = [demo_data.SOURCES[f"{family}_{x}"].register for x in "abcde"]
        assert len(set(np.round(registers, 3))) == 5


def test_an_event_has_partials_at_the_sources_ratios_times_its_pitch():
    """A string at 220 Hz without vibrato: its strongest peaks are its first partials,
    slightly stretched (a stiff string), at ratios x 220 Hz within one FFT bin; a bell's
    lowest peak is its pitch and the others are its own inharmonic ratios."""
    rng = np.random.default_rng(0)
    string = demo_data.SOURCES["string_a"]._replace(decay=5.0)  # long decay: sharp peaks
    samples = demo_data._render(string, rng, 220.0, 1.0, 16000)
    expected = string.ratios[:3] * 220.0
    found = _peak_frequencies(samples, 12)
    for f in expected:
        assert np.min(np.abs(found - f)) <= 1.5, (f, found)
    bell = demo_data.SOURCES["bell_a"]._replace(decay=5.0)
    found = _peak_frequencies(demo_data._render(bell, rng, 300.0, 1.0, 16000), 6)
    assert np.allclose(found, np.sort(bell.ratios * 300.0), atol=1.5), found


def test_pitch_varies_between_events_within_the_documented_spread(monkeypatch):
    """The nuisance: the events synthesize_clip renders for one source lie within
    +-PITCH_SPREAD semitones of its register and spread over most of that range."""
    pitches = []
    real = demo_data._render

    def recording(source, rng, pitch, duration, sample_rate):
        if source is demo_data.SOURCES["wind_b"]:  # not the distractors
            pitches.append(pitch)
        return real(source, rng, pitch, duration, sample_rate)

    monkeypatch.setattr(demo_data, "_render", recording)
    for i in range(6):
        synthesize_clip("wind_b", i, 2.0)
    semitones = 12 * np.log2(np.array(pitches) / demo_data.SOURCES["wind_b"].register)
    assert len(pitches) >= 12 and np.abs(semitones).max() <= demo_data.PITCH_SPREAD
    assert np.ptp(semitones) > demo_data.PITCH_SPREAD  # more than half the range


def test_an_event_sounds_at_its_pitch():
    """A voice event without vibrato: its strongest peak is a harmonic of the pitch it
    was rendered at (a formant may favour a higher one than the fundamental)."""
    source = demo_data.SOURCES["voice_a"]._replace(vibrato=(0.0, 0.0), noise=0.0)
    rng = np.random.default_rng(1)
    for pitch in (0.8 * source.register, source.register, 1.3 * source.register):
        found = _peak_frequencies(demo_data._render(source, rng, pitch, 0.5, 16000), 1)[0]
        assert abs(found / pitch - round(found / pitch)) < 0.03 and round(found / pitch) >= 1


def _spectrum_statistics(name, index):
    wav = synthesize_clip(name, index, 1.0, seed=0).astype(np.float32) / 32768.0
    f = compute_fbank(torch.from_numpy(wav)).double().numpy()
    return np.concatenate([f.mean(0), f.std(0)])


def test_two_sources_of_one_family_are_told_apart_by_timbre():
    """The two held-out voices: logistic regression on spectrum statistics separates
    them, so what names a source is in the sound, under its pitch and level nuisance."""
    n = 20
    x = np.array([_spectrum_statistics(c, i) for c in ("voice_d", "voice_e") for i in range(n)])
    labels = np.repeat([0, 1], n)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    accuracy = cross_val_score(model, x, labels, cv=StratifiedKFold(5, shuffle=True, random_state=0)).mean()
    assert accuracy >= 0.85


def test_stale_files_are_refused(tmp_path):
    make_demo_corpus(tmp_path, clips_per_class=2, seconds=0.1, valid_percent=0.0)
    assert not (tmp_path / "valid.tsv").exists() and not (tmp_path / "valid.label").exists()
    # Re-running with the same settings is fine; fewer clips would leave strays.
    make_demo_corpus(tmp_path, clips_per_class=2, seconds=0.1, valid_percent=0.0)
    with pytest.raises(ValueError, match="would not write"):
        make_demo_corpus(tmp_path, clips_per_class=2, seconds=0.1, valid_percent=0.0, heldout_clips_per_class=1)


@pytest.mark.parametrize("kwargs, message", [
    (dict(clips_per_class=0), "clips_per_class"),
    (dict(heldout_clips_per_class=0), "heldout_clips_per_class"),
    (dict(seconds=0.03), "shorter than one 25 ms frame"),
    (dict(sample_rate=8000), "16000 Hz or more"),
    (dict(valid_percent=1.0), "valid_percent"),
])
def test_bad_arguments_are_named(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_demo_corpus(tmp_path, **{"clips_per_class": 1, "seconds": 0.1, **kwargs})
    assert not (tmp_path / "audio").exists()


def test_cli(tmp_path, capsys):
    code = main([str(tmp_path / "d"), "--clips-per-class", "2", "--heldout-clips-per-class", "1",
                 "--seconds", "0.1", "--seed", "5"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["num_clips"] == 15 * 2 + 10 * 1
    assert (summary["num_train"], summary["num_valid"], summary["num_heldout"]) == (27, 3, 10)
    assert (tmp_path / "d" / "train.label").exists() and (tmp_path / "d" / "heldout.label").exists()
    assert main([str(tmp_path / "e"), "--seconds", "0.01"]) == 2
    assert "25 ms frame" in capsys.readouterr().err


def test_seen_test_split_adds_clips_without_changing_the_others(tmp_path, corpus):
    """seen_test.tsv: further clips of the seen classes, disjoint from train/valid; the
    train/valid/heldout manifests are the same as without it."""
    out_dir, summary = corpus
    with_test = make_demo_corpus(tmp_path, clips_per_class=CLIPS, seconds=SECONDS, seed=0,
                                 valid_percent=0.2, heldout_clips_per_class=HELDOUT_CLIPS,
                                 seen_test_clips_per_class=2)
    assert summary["seen_test_manifest"] is None and summary["num_seen_test"] == 0
    for split in SPLITS:
        with open(os.path.join(out_dir, f"{split}.tsv")) as a, \
                open(os.path.join(tmp_path, f"{split}.tsv")) as b:
            assert a.read().split("\n")[1:] == b.read().split("\n")[1:]
    test = read_manifest(with_test["seen_test_manifest"])
    assert len(test) == 2 * len(SEEN_CLASSES) == with_test["num_seen_test"]
    used = set(read_manifest(os.path.join(tmp_path, "train.tsv")).paths) | \
        set(read_manifest(os.path.join(tmp_path, "valid.tsv")).paths)
    assert not used & set(test.paths)
    with open(with_test["seen_test_labels"]) as f:
        labels = f.read().split()
    assert sorted(set(labels)) == sorted(SEEN_CLASSES)
    assert [p.split("/")[0] for p in test.paths] == labels
    assert with_test["class_counts"]["seen_test"] == {c: 2 for c in SEEN_CLASSES}
