"""A small deterministic synthetic corpus for the demo job: sound *sources* under nuisance.

Every class is a *source*, a synthetic voice or instrument with a fixed timbre: its
register, the resonances of its body (for a voice, the length of its vocal tract), the
strength and decay of its partials, its vibrato and breath noise. A clip is a short
phrase of events of one source, and everything that is "what is played" rather than
"who plays it" is drawn at random per clip or per event: pitch (over +-5 semitones
around the source's register), the vowel a voice sings, each event's level, length and
onset, the clip's length, its coloured background noise (5 to 30 dB SNR), in 30% of the
clips a quieter distractor from another source of the same split, and the overall gain.
That is how real-world classes are mostly defined (who or what makes the sound, under
variation of pitch, level, noise and timing), and what two views of one clip share.

The sources come in five families (``voice``, ``string``, ``bell``, ``wind``, ``drum``)
of five sources each. The first three of each family (``voice_a`` .. ``voice_c``) are the
**seen** classes (``train.tsv``, ``valid.tsv``, ``seen_test.tsv``: tuning, fine-tuning);
the last two (``voice_d``, ``voice_e``) are the **held-out** classes (``heldout.tsv``):
new sources of known kinds, as new speakers or instruments are. Few-shot evaluation on
them asks to tell apart sources the encoder never heard, often of the same family.

A source's parameters are drawn once from a fixed generator (``voice_b`` is the same voice
whatever the corpus seed); each clip has its own generator seeded by ``(seed, class,
index)``, so the same seed gives the same bytes on every run, and a clip does not change
when the number of clips per class does.

Command line::

    python examples/demo/demo_data.py OUT_DIR --clips-per-class 20 --seconds 3
"""

import argparse
import json
import os
import sys
from typing import Dict, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import soundfile as sf

from uamix_fairseq.manifest import write_manifest

__all__ = ["CLASSES", "FAMILIES", "HELDOUT_CLASSES", "SEEN_CLASSES", "SHORTEST_FRACTION",
           "SOURCES", "main", "make_demo_corpus", "synthesize_clip"]

# Clip lengths are uniform in [SHORTEST_FRACTION, 1] * seconds. 0.7 keeps 0.5 s test
# clips at >= 33 frames (the tests crop 32).
SHORTEST_FRACTION = 0.7
DISTRACTOR_PROBABILITY = 0.3
DISTRACTOR_DB = (6.0, 15.0)  # distractor power below the clip's own events
SNR_DB = (5.0, 30.0)  # events' power over the background noise's, over the whole clip
PEAK_DB = (-20.0, -1.0)  # final peak level, dBFS
PITCH_SPREAD = 5.0  # semitones either side of the source's register, per event
EVENT_DB = (-8.0, 0.0)  # level of one event relative to the loudest possible

FAMILIES: Tuple[str, ...] = ("voice", "string", "bell", "wind", "drum")
SOURCES_PER_FAMILY, SEEN_PER_FAMILY = 5, 3
SOURCE_SEED = 20261206  # the sources' own generator: fixed, independent of the corpus seed


def _name(family: str, index: int) -> str:
    return f"{family}_{'abcdefghij'[index]}"


def _names(first: int, stop: int) -> Tuple[str, ...]:
    return tuple(_name(family, i) for family in FAMILIES for i in range(first, stop))


SEEN_CLASSES: Tuple[str, ...] = _names(0, SEEN_PER_FAMILY)
HELDOUT_CLASSES: Tuple[str, ...] = _names(SEEN_PER_FAMILY, SOURCES_PER_FAMILY)
CLASSES: Tuple[str, ...] = SEEN_CLASSES + HELDOUT_CLASSES

# Five vowels' first three formants (Hz), roughly an adult speaker's. A voice sings a
# random vowel per event, its formants scaled by the voice's own tract factor.
VOWEL_FORMANTS = np.array([
    [730.0, 1090.0, 2440.0],  # a
    [530.0, 1840.0, 2480.0],  # e
    [270.0, 2290.0, 3010.0],  # i
    [570.0, 840.0, 2410.0],  # o
    [300.0, 870.0, 2240.0],  # u
])
FORMANT_BANDWIDTHS = np.array([80.0, 120.0, 180.0])


class Source(NamedTuple):
    """The fixed timbre of one class (frequencies in Hz, times in seconds)."""

    family: str
    register: float  # centre pitch: fundamental, lowest partial, or noise band centre
    ratios: np.ndarray  # [J] partial frequencies relative to the pitch
    weights: np.ndarray  # [J] partial amplitudes before the resonances
    resonances: np.ndarray  # [R, 3] centre, bandwidth, gain of the body's resonances;
    #                         for a voice [1, 3] whose first number is the tract factor
    decay: float  # amplitude time constant of a plucked, struck or hit event (0: held)
    vibrato: Tuple[float, float]  # rate (Hz), depth (fraction of the pitch)
    noise: float  # share of breath or rattle noise in an event's power
    duration: Tuple[float, float]  # range of an event's length


def _log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    """A value spread evenly on a log scale, as pitches are heard."""
    return float(np.exp(rng.uniform(np.log(low), np.log(high))))


def _draw_source(family: str, rng: np.random.Generator) -> Source:
    """Random timbre parameters of one source of ``family``.

    ``tilt`` and ``body`` are drawn for every family, used or not (a voice's formants
    come from its vowels, a bell has its own partial levels, a drum's noise band and
    single thump are rescaled to unit power whatever the weights and body): the later
    draws, and so every source, stay as they were recorded."""
    k = np.arange(1, 41, dtype=np.float64)
    tilt = k ** -rng.uniform(0.6, 1.6)
    body = np.array([[_log_uniform(rng, 300.0, 5000.0), _log_uniform(rng, 100.0, 800.0),
                      rng.uniform(0.3, 1.0)] for _ in range(3)])
    if family == "voice":
        tract = np.array([[rng.uniform(0.82, 1.22), 0.0, 0.0]])
        return Source(family, _log_uniform(rng, 90.0, 300.0), k, tilt, tract, 0.0,
                      (rng.uniform(4.0, 7.0), rng.uniform(0.005, 0.03)),
                      rng.uniform(0.0, 0.3), (0.15, 0.45))
    if family == "string":  # a stiff string: slightly stretched harmonics
        stretch = np.sqrt(1.0 + rng.uniform(0.0, 3e-4) * k**2)
        return Source(family, _log_uniform(rng, 100.0, 800.0), k * stretch, tilt, body,
                      rng.uniform(0.08, 0.5), (0.0, 0.0), 0.0, (0.2, 0.6))
    if family == "bell":  # inharmonic partials, each bell its own
        ratios = np.concatenate([[1.0], np.sort(rng.uniform(1.5, 12.0, size=5))])
        return Source(family, _log_uniform(rng, 200.0, 1500.0), ratios,
                      rng.uniform(0.2, 1.0, size=6), body, rng.uniform(0.15, 0.8),
                      (0.0, 0.0), 0.0, (0.3, 0.8))
    if family == "wind":  # a reed or pipe: even harmonics weaker, breath, vibrato
        weights = tilt * np.where(k % 2 == 0, rng.uniform(0.1, 1.0), 1.0)
        return Source(family, _log_uniform(rng, 150.0, 1000.0), k, weights, body, 0.0,
                      (rng.uniform(3.0, 6.0), rng.uniform(0.0, 0.02)),
                      rng.uniform(0.02, 0.3), (0.2, 0.7))
    if family == "drum":  # a noise band (its centre is the pitch) over a low thump
        return Source(family, _log_uniform(rng, 300.0, 5000.0),
                      np.array([_log_uniform(rng, 0.05, 0.5)]), np.array([rng.uniform(0.2, 1.0)]),
                      body, rng.uniform(0.03, 0.25), (0.0, 0.0), rng.uniform(0.4, 0.9),
                      (0.08, 0.35))
    raise ValueError(f"unknown family {family!r}")


def _all_sources() -> Dict[str, Source]:
    out = {}
    for f, family in enumerate(FAMILIES):
        for i in range(SOURCES_PER_FAMILY):
            out[_name(family, i)] = _draw_source(family, np.random.default_rng([SOURCE_SEED, f, i]))
    return out


SOURCES: Dict[str, Source] = _all_sources()


# ---------------------------------------------------------------------------
# one event of a source
# ---------------------------------------------------------------------------


def _resonance_gain(freqs: np.ndarray, resonances: np.ndarray) -> np.ndarray:
    """Gain of a body with ``resonances`` [R, 3] (centre, bandwidth, gain) at ``freqs``."""
    distance = (freqs[:, None] - resonances[None, :, 0]) / resonances[None, :, 1]
    return 0.05 + np.sum(resonances[None, :, 2] / (1.0 + distance**2), axis=1)


def _partial_gains(source: Source, pitch: float, rng: np.random.Generator) -> np.ndarray:
    """Amplitude of each partial of an event at ``pitch``: the source's weights times
    its body's resonances (a voice: a random vowel's formants, scaled by its tract)."""
    freqs = source.ratios * pitch
    if source.family == "voice":
        formants = VOWEL_FORMANTS[rng.integers(len(VOWEL_FORMANTS))] * source.resonances[0, 0]
        body = np.stack([formants, FORMANT_BANDWIDTHS, np.ones(3)], axis=1)
    else:
        body = source.resonances
    return source.weights * _resonance_gain(freqs, body)


def _noise_band(rng: np.random.Generator, n: int, low: float, high: float, sample_rate: int) -> np.ndarray:
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, d=1.0 / sample_rate)
    spectrum[(freqs < low) | (freqs > high)] = 0.0
    out = np.fft.irfft(spectrum, n=n)
    return out / (np.sqrt(np.mean(out**2)) + 1e-12)


def _envelope(source: Source, n: int, sample_rate: int) -> np.ndarray:
    """Held sources swell in and out; plucked, struck and hit ones decay with the
    source's time constant. Every envelope fades to zero at both ends (no clicks)."""
    t = np.arange(n) / sample_rate
    duration = n / sample_rate
    fade = min(0.005, duration / 4.0)
    edges = np.clip(np.minimum(t, duration - t) / fade, 0.0, 1.0)
    if source.decay == 0.0:  # voice, wind
        attack = min(0.06, duration / 3.0)
        return edges * np.clip(t / attack, 0.0, 1.0) * np.clip((duration - t) / attack, 0.0, 1.0)
    return edges * np.exp(-t / source.decay)


def _render(source: Source, rng: np.random.Generator, pitch: float, duration: float,
            sample_rate: int) -> np.ndarray:
    """Samples of one event of ``source`` at ``pitch``, unit RMS before its envelope."""
    n = max(8, int(round(duration * sample_rate)))
    t = np.arange(n) / sample_rate
    rate, depth = source.vibrato
    freq = pitch * (1.0 + depth * np.sin(2.0 * np.pi * rate * t + rng.uniform(0.0, 2.0 * np.pi)))
    phase = 2.0 * np.pi * np.cumsum(freq) / sample_rate
    ratios = source.ratios[:, None]
    amplitudes = _partial_gains(source, pitch, rng)[:, None]
    # Full level up to 0.4 * sr, silent above 0.45 * sr: nothing aliases.
    amplitudes = amplitudes * np.clip((0.45 * sample_rate - ratios * freq) / (0.05 * sample_rate), 0.0, 1.0)
    if source.decay > 0.0 and source.family != "drum":  # higher partials die sooner
        amplitudes = amplitudes * np.exp(-np.outer(np.arange(len(ratios)) * 0.3, t) / source.decay)
    tone = np.sum(amplitudes * np.sin(ratios * phase + rng.uniform(0.0, 2.0 * np.pi, size=ratios.shape)), axis=0)
    tone /= np.sqrt(np.mean(tone**2)) + 1e-12
    if source.noise > 0.0:
        if source.family == "drum":  # the band around the pitch (a drum's body and
            #                          weights are drawn but leave it as it is)
            noise = _noise_band(rng, n, pitch / 1.5, min(pitch * 1.5, 0.45 * sample_rate), sample_rate)
        else:  # breath: broadband above the fundamental
            noise = _noise_band(rng, n, pitch, 0.45 * sample_rate, sample_rate)
        tone = np.sqrt(1.0 - source.noise) * tone + np.sqrt(source.noise) * noise
    return tone * _envelope(source, n, sample_rate)


# ---------------------------------------------------------------------------
# one clip
# ---------------------------------------------------------------------------


def _foreground(class_name: str, rng: np.random.Generator, n: int, sample_rate: int) -> np.ndarray:
    """A phrase of events of ``class_name``'s source filling ``n`` samples, before
    noise and gain: random pitches, lengths, levels, gaps and overlaps."""
    source = SOURCES[class_name]
    length = n / sample_rate
    out = np.zeros(n)
    time = rng.uniform(0.0, 0.15) * length
    while True:
        duration = rng.uniform(*source.duration)
        if time + 0.5 * duration > length and np.any(out):
            break
        pitch = source.register * 2.0 ** (rng.uniform(-PITCH_SPREAD, PITCH_SPREAD) / 12.0)
        gain = 10.0 ** (rng.uniform(*EVENT_DB) / 20.0)
        samples = gain * _render(source, rng, pitch, duration, sample_rate)
        start = min(n - 1, int(round(time * sample_rate)))
        stop = min(n, start + samples.size)
        out[start:stop] += samples[: stop - start]
        time += duration * rng.uniform(0.6, 1.4) + rng.uniform(0.0, 0.2)
    return out


def _coloured_noise(rng: np.random.Generator, n: int, sample_rate: int) -> np.ndarray:
    """Noise with power falling as 1/f^a above 20 Hz, a uniform in [0, 2] (white to brown)."""
    exponent = rng.uniform(0.0, 2.0)
    freqs = np.fft.rfftfreq(n, d=1.0 / sample_rate)
    shape = np.where(freqs >= 20.0, np.maximum(freqs, 20.0) ** (-exponent / 2.0), 0.0)
    return np.fft.irfft(np.fft.rfft(rng.standard_normal(n)) * shape, n=n)


def _power(x: np.ndarray) -> float:
    return float(np.mean(x**2)) + 1e-20


def synthesize_clip(class_name: str, index: int, seconds: float = 3.0, sample_rate: int = 16000, seed: int = 0) -> np.ndarray:
    """Clip ``index`` of ``class_name`` as int16 samples ``[N]``.

    ``N`` is uniform in ``[SHORTEST_FRACTION, 1] * seconds * sample_rate``. Each clip has
    its own generator seeded by ``(seed, class number, index)``, so a clip does not change
    when the number of clips per class does. A distractor comes from the same split
    (seen or held out), so held-out sources never leak into the seen clips.
    """
    if class_name not in SOURCES:
        raise ValueError(f"unknown demo class {class_name!r}; choose from {', '.join(CLASSES)}")
    rng = np.random.default_rng([seed, CLASSES.index(class_name), index])
    n = max(1, int(round(seconds * rng.uniform(SHORTEST_FRACTION, 1.0) * sample_rate)))
    signal = _foreground(class_name, rng, n, sample_rate)
    power = _power(signal)
    if rng.random() < DISTRACTOR_PROBABILITY:
        split = SEEN_CLASSES if class_name in SEEN_CLASSES else HELDOUT_CLASSES
        other = str(rng.choice([c for c in split if c != class_name]))
        distractor = _foreground(other, rng, n, sample_rate)
        signal += distractor * np.sqrt(power / _power(distractor) * 10.0 ** (-rng.uniform(*DISTRACTOR_DB) / 10.0))
    noise = _coloured_noise(rng, n, sample_rate)
    signal += noise * np.sqrt(power / _power(noise) * 10.0 ** (-rng.uniform(*SNR_DB) / 10.0))
    signal *= 10.0 ** (rng.uniform(*PEAK_DB) / 20.0) / (np.abs(signal).max() + 1e-20)
    # Quantise here rather than in libsndfile so the bytes depend only on numpy.
    return np.round(np.clip(signal, -1.0, 1.0) * 32767.0).astype(np.int16)


# ---------------------------------------------------------------------------
# the corpus
# ---------------------------------------------------------------------------


def _rel_path(class_name: str, index: int) -> str:
    return f"{class_name}/{class_name}_{index:03d}.wav"


def _refuse_stale_files(audio_dir: str, expected: Sequence[str]) -> None:
    """Stop if ``audio_dir`` holds files this run would not write.

    They would look like part of the corpus (e.g. clips from an earlier run with more
    clips per class), and deleting a user's files is not our call.
    """
    if not os.path.isdir(audio_dir):
        return
    wanted = {os.path.join(audio_dir, *rel.split("/")) for rel in expected}
    for folder, _, files in os.walk(audio_dir):
        for name in files:
            path = os.path.join(folder, name)
            if path not in wanted:
                raise ValueError(
                    f"{audio_dir} already holds {path}, which this demo corpus would "
                    "not write; delete the folder or choose another OUT_DIR"
                )


def _pick_valid(clips_per_class: int, valid_percent: float, seed: int) -> set:
    """``(class, index)`` pairs of the valid split, spread over the seen classes evenly.

    ``round(valid_percent * seen clips)`` clips, at least one when ``valid_percent > 0``
    (and there are two clips or more), as ``uamix_fairseq.manifest`` does: each class's
    clips in random order, taken round by round over the classes in random order.
    """
    total = clips_per_class * len(SEEN_CLASSES)
    if valid_percent <= 0 or total < 2:
        return set()
    count = min(max(1, int(round(valid_percent * total))), total - 1)
    rng = np.random.default_rng(seed)
    orders = {name: rng.permutation(clips_per_class) for name in SEEN_CLASSES}
    candidates = [(SEEN_CLASSES[c], int(orders[SEEN_CLASSES[c]][r]))
                  for r in range(clips_per_class) for c in rng.permutation(len(SEEN_CLASSES))]
    return set(candidates[:count])


def make_demo_corpus(
    out_dir,
    clips_per_class: int = 20,
    seconds: float = 3.0,
    sample_rate: int = 16000,
    seed: int = 0,
    valid_percent: float = 0.1,
    heldout_clips_per_class: Optional[int] = None,
    seen_test_clips_per_class: int = 0,
) -> Dict:
    """Write the demo corpus, its manifests and label files under ``out_dir``.

    Layout::

        out_dir/audio/<class>/<class>_<i>.wav     16-bit PCM mono, every class
        out_dir/train.tsv, out_dir/valid.tsv      fairseq manifests, seen classes only
        out_dir/heldout.tsv                       every clip of the held-out classes
        out_dir/seen_test.tsv                     more clips of the seen classes, never
                                                  in train/valid (when asked for)
        out_dir/<split>.label                     one class name per clip line

    Args:
        clips_per_class: clips of each seen class (train + valid).
        seconds: the longest clip; lengths are uniform in
            ``[SHORTEST_FRACTION, 1] * seconds``.
        valid_percent: fraction in ``[0, 1)`` of the seen clips put in ``valid.tsv``,
            spread evenly over the classes; with 0 no valid split is written.
        heldout_clips_per_class: clips of each held-out class (default: ``clips_per_class``).
        seen_test_clips_per_class: further clips of each seen class for ``seen_test.tsv``
            (indices after the train/valid ones, so those clips are the same with or
            without it); 0 = no such split.

    Returns:
        JSON-serialisable summary: ``out_dir``, ``audio_dir``, ``classes``,
        ``seen_classes``, ``heldout_classes``, ``clips_per_class``,
        ``heldout_clips_per_class``, ``seen_test_clips_per_class``, ``num_clips``,
        ``seconds``, ``min_seconds``, ``sample_rate``, ``num_train``, ``num_valid``,
        ``num_heldout``, ``num_seen_test``, and per split (``train``, ``valid``,
        ``heldout``, ``seen_test``) ``<split>_manifest`` and ``<split>_labels``
        (None when not written), and ``class_counts`` (``{split: {class: count}}``).
    """
    if heldout_clips_per_class is None:
        heldout_clips_per_class = clips_per_class
    for name, value in (("clips_per_class", clips_per_class), ("heldout_clips_per_class", heldout_clips_per_class)):
        if int(value) != value or value < 1:
            raise ValueError(f"{name} must be a whole number of at least 1, got {value}")
    if int(seen_test_clips_per_class) != seen_test_clips_per_class or seen_test_clips_per_class < 0:
        raise ValueError("seen_test_clips_per_class must be a whole number >= 0, got "
                         f"{seen_test_clips_per_class}")
    if sample_rate < 16000:
        raise ValueError(f"sample_rate={sample_rate}: the sources reach 7.5 kHz; use 16000 Hz or more")
    if SHORTEST_FRACTION * seconds * sample_rate < 400:
        raise ValueError(
            f"seconds={seconds} at {sample_rate} Hz makes clips shorter than one 25 ms frame "
            f"(the shortest are {SHORTEST_FRACTION} x seconds); use longer clips"
        )
    if not 0 <= valid_percent < 1:
        raise ValueError(f"valid_percent={valid_percent} is outside [0, 1); it is a fraction (0.1 = 10%)")
    out_dir = os.path.abspath(os.fspath(out_dir))
    audio_dir = os.path.join(out_dir, "audio")
    clips = [(name, i) for name in SEEN_CLASSES for i in range(clips_per_class)]
    clips += [(name, i) for name in HELDOUT_CLASSES for i in range(heldout_clips_per_class)]
    seen_test = [(name, clips_per_class + i) for name in SEEN_CLASSES
                 for i in range(seen_test_clips_per_class)]
    clips += seen_test
    _refuse_stale_files(audio_dir, [_rel_path(name, i) for name, i in clips])

    sizes = {}
    for name, i in clips:
        path = os.path.join(audio_dir, *_rel_path(name, i).split("/"))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        samples = synthesize_clip(name, i, seconds, sample_rate, seed)
        sf.write(path, samples, sample_rate, subtype="PCM_16")
        sizes[name, i] = samples.size

    valid = _pick_valid(clips_per_class, valid_percent, seed)
    splits = {
        "train": [c for c in clips if c[0] in SEEN_CLASSES and c[1] < clips_per_class
                  and c not in valid],
        "valid": [c for c in clips if c in valid],
        "heldout": [c for c in clips if c[0] in HELDOUT_CLASSES],
        "seen_test": seen_test,
    }
    summary = {
        "out_dir": out_dir,
        "audio_dir": audio_dir,
        "classes": list(CLASSES),
        "seen_classes": list(SEEN_CLASSES),
        "heldout_classes": list(HELDOUT_CLASSES),
        "clips_per_class": clips_per_class,
        "heldout_clips_per_class": heldout_clips_per_class,
        "seen_test_clips_per_class": seen_test_clips_per_class,
        "num_clips": len(clips),
        "seconds": seconds,
        "min_seconds": SHORTEST_FRACTION * seconds,
        "sample_rate": sample_rate,
        "class_counts": {},
    }
    for split, members in splits.items():
        summary[f"num_{split}"] = len(members)
        summary[f"{split}_manifest"] = summary[f"{split}_labels"] = None
        if not members:
            continue  # like uamix_fairseq.manifest: an empty split gets no files
        manifest_path = os.path.join(out_dir, f"{split}.tsv")
        label_path = os.path.join(out_dir, f"{split}.label")
        write_manifest(manifest_path, audio_dir, [(_rel_path(name, i), sizes[name, i]) for name, i in members])
        with open(label_path, "w", encoding="utf-8") as handle:
            handle.write("".join(name + "\n" for name, _ in members))
        summary[f"{split}_manifest"], summary[f"{split}_labels"] = manifest_path, label_path
        names = SEEN_CLASSES if split != "heldout" else HELDOUT_CLASSES
        summary["class_counts"][split] = {name: sum(m[0] == name for m in members) for name in names}
    return summary


# ---------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command-line entry point; prints the summary as JSON."""
    parser = argparse.ArgumentParser(
        prog="python examples/demo/demo_data.py",
        description="Write the deterministic synthetic demo corpus (wav files, manifests, labels): "
        f"{len(SEEN_CLASSES)} seen sound sources in train/valid.tsv, {len(HELDOUT_CLASSES)} held-out "
        "sources in heldout.tsv.",
    )
    parser.add_argument("out_dir", metavar="OUT_DIR", help="folder to write audio/, the .tsv manifests and .label files into")
    parser.add_argument("--clips-per-class", type=int, default=20, help="clips of each seen class (default: 20)")
    parser.add_argument("--heldout-clips-per-class", type=int, default=None,
                        help="clips of each held-out class (default: as --clips-per-class)")
    parser.add_argument("--seen-test-clips-per-class", type=int, default=0,
                        help="further clips of each seen class in seen_test.tsv, never in "
                        "train/valid (default: 0, no such split)")
    parser.add_argument("--seconds", type=float, default=3.0,
                        help=f"longest clip in seconds; lengths vary from {SHORTEST_FRACTION} times that (default: 3.0)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthesis and of the valid split (default: 0)")
    parser.add_argument(
        "--valid-percent",
        type=float,
        default=0.1,
        help="fraction in [0, 1) of the seen clips put in valid.tsv (default: 0.1)",
    )
    args = parser.parse_args(argv)
    try:
        summary = make_demo_corpus(
            args.out_dir,
            clips_per_class=args.clips_per_class,
            seconds=args.seconds,
            seed=args.seed,
            valid_percent=args.valid_percent,
            heldout_clips_per_class=args.heldout_clips_per_class,
            seen_test_clips_per_class=args.seen_test_clips_per_class,
        )
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
