"""A small deterministic synthetic corpus for the demo job, with held-out classes.

Every class is a *structure* (how events are arranged in time) played with a *timbre*
(what one event sounds like). Several classes come in pairs that differ only in
temporal order: up- against down-sweeps, rising against falling arpeggios,
accelerating against decelerating click trains, regular against irregular bursts.
Such a pair has the same distribution of frames, so the spectrum averaged over a clip
(or any other bag-of-frames statistic) cannot tell its two classes apart; the order of
the frames can.

Each clip draws everything at random: its length (0.7 to 1.0 times ``seconds``), the
number, pitch, level, duration and position of its events, sometimes a quieter
distractor made by another class of the same split, coloured background noise at 5 to
30 dB SNR, and its overall gain. The clip has its own generator seeded by ``(seed,
class, index)``, so the same seed gives the same bytes on every run, and a clip does
not change when the number of clips per class does.

``SEEN_CLASSES`` go into ``train.tsv``/``valid.tsv`` (for pretraining, tuning and
fine-tuning); ``HELDOUT_CLASSES`` go only into ``heldout.tsv``, for few-shot evaluation
on classes the encoder never heard. The held-out classes are new combinations of the
structures and timbres of the seen ones.

Command line::

    python examples/demo/demo_data.py OUT_DIR --clips-per-class 40 --seconds 2
"""

import argparse
import json
import os
import sys
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import soundfile as sf

from uamix_fairseq.manifest import write_manifest

__all__ = ["CLASSES", "HELDOUT_CLASSES", "RECIPES", "SEEN_CLASSES", "SHORTEST_FRACTION",
           "main", "make_demo_corpus", "synthesize_clip"]

# Clip lengths are uniform in [SHORTEST_FRACTION, 1] * seconds. 0.7 keeps 0.5 s test
# clips at >= 33 frames (the tests crop 32) and 2 s demo clips above 1.28 s crops.
SHORTEST_FRACTION = 0.7
DISTRACTOR_PROBABILITY = 0.3
DISTRACTOR_DB = (6.0, 15.0)  # distractor power below the clip's own events
SNR_DB = (5.0, 30.0)  # events' power over the background noise's, over the whole clip
PEAK_DB = (-20.0, -1.0)  # final peak level, dBFS

# class -> (structure, timbre). Pairs that share a timbre and differ only in the
# direction of a structure have the same long-term spectrum.
RECIPES: Dict[str, Tuple[str, str]] = {
    "tone_sweep_up": ("sweep_up", "tone"),
    "tone_sweep_down": ("sweep_down", "tone"),
    "harmonic_arpeggio_up": ("arpeggio_up", "harmonic"),
    "harmonic_arpeggio_down": ("arpeggio_down", "harmonic"),
    "click_train_accelerating": ("train_accelerating", "noise"),
    "click_train_decelerating": ("train_decelerating", "noise"),
    "vowel_bursts_regular": ("bursts_regular", "vowel"),
    "bell_bursts_irregular": ("bursts_irregular", "bell"),
    # held out: structures and timbres seen above, in new combinations
    "harmonic_sweep_up": ("sweep_up", "harmonic"),
    "harmonic_sweep_down": ("sweep_down", "harmonic"),
    "bell_arpeggio_up": ("arpeggio_up", "bell"),
    "bell_arpeggio_down": ("arpeggio_down", "bell"),
    "vowel_bursts_irregular": ("bursts_irregular", "vowel"),
}
SEEN_CLASSES: Tuple[str, ...] = tuple(list(RECIPES)[:8])
HELDOUT_CLASSES: Tuple[str, ...] = tuple(list(RECIPES)[8:])
CLASSES: Tuple[str, ...] = SEEN_CLASSES + HELDOUT_CLASSES

# Range of the (fundamental) frequency of each timbre, Hz.
PITCH_RANGES = {
    "tone": (250.0, 4000.0),
    "harmonic": (100.0, 800.0),
    "bell": (250.0, 2000.0),
    "noise": (500.0, 5000.0),  # centre of the band
    "vowel": (85.0, 260.0),
}
# Five vowels' first three formants (Hz), roughly an adult speaker's.
VOWEL_FORMANTS = np.array([
    [730.0, 1090.0, 2440.0],  # a
    [530.0, 1840.0, 2480.0],  # e
    [270.0, 2290.0, 3010.0],  # i
    [570.0, 840.0, 2410.0],  # o
    [300.0, 870.0, 2240.0],  # u
])
FORMANT_BANDWIDTHS = np.array([80.0, 120.0, 180.0])
# Partials of a free bar (a xylophone-like bell), relative to the lowest one.
BELL_RATIOS = np.array([1.0, 2.756, 5.404, 8.933, 13.34])
BELL_AMPLITUDES = np.array([1.0, 0.7, 0.5, 0.35, 0.25])


class _Event(NamedTuple):
    onset: float  # seconds
    duration: float  # seconds
    f_start: float  # Hz; the pitch glides exponentially from f_start to f_end
    f_end: float
    gain: float
    envelope: str  # "flat", "pluck", "click" or "hump"


# ---------------------------------------------------------------------------
# random draws
# ---------------------------------------------------------------------------


def _log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    """A value spread evenly on a log scale, as pitches are heard."""
    return float(np.exp(rng.uniform(np.log(low), np.log(high))))


def _event_gain(rng: np.random.Generator) -> float:
    return 10.0 ** (rng.uniform(-8.0, 0.0) / 20.0)


def _pitch_interval(rng: np.random.Generator, timbre: str, octaves: float) -> Tuple[float, float]:
    """A random (low, high) pitch pair ``octaves`` apart inside the timbre's range."""
    low, high = PITCH_RANGES[timbre]
    octaves = min(octaves, np.log2(high / low))
    start = _log_uniform(rng, low, high / 2.0**octaves)
    return start, start * 2.0**octaves


# ---------------------------------------------------------------------------
# timbres: one event as unit-RMS samples, before its envelope
# ---------------------------------------------------------------------------


def _partials(rng, phase, freq, ratios, amplitudes, sample_rate):
    """Sum of sines at ``ratios`` times the pitch, faded out towards Nyquist.

    ``amplitudes`` is ``[J]`` or ``[J, N]`` (partials by samples).
    """
    ratios = np.asarray(ratios, dtype=np.float64)[:, None]
    # Full level up to 0.4 * sr, silent above 0.45 * sr: no aliasing of gliding partials.
    rolloff = np.clip((0.45 * sample_rate - ratios * freq) / (0.05 * sample_rate), 0.0, 1.0)
    offsets = rng.uniform(0.0, 2.0 * np.pi, size=ratios.shape)
    return np.sum(np.asarray(amplitudes).reshape(len(ratios), -1) * rolloff * np.sin(ratios * phase + offsets), axis=0)


def _band_noise(rng, phase, freq, sample_rate):
    """Noise in a band around the (gliding) pitch: low-pass noise times a carrier."""
    n = phase.size
    bandwidth = rng.uniform(0.15, 0.35) * float(np.exp(np.mean(np.log(freq))))
    spectrum = np.fft.rfft(rng.standard_normal(n))
    spectrum[np.fft.rfftfreq(n, d=1.0 / sample_rate) > bandwidth / 2.0] = 0.0
    rolloff = np.clip((0.45 * sample_rate - freq) / (0.05 * sample_rate), 0.0, 1.0)
    return np.fft.irfft(spectrum, n=n) * np.cos(phase) * rolloff


def _source(timbre: str, rng: np.random.Generator, freq: np.ndarray, sample_rate: int) -> np.ndarray:
    """Samples of one event of ``timbre`` following the pitch track ``freq`` [N]."""
    phase = 2.0 * np.pi * np.cumsum(freq) / sample_rate
    if timbre == "tone":
        out = _partials(rng, phase, freq, [1.0], [1.0], sample_rate)
    elif timbre == "harmonic":  # a bright harmonic stack, like a bowed or blown note
        k = np.arange(1, 11, dtype=np.float64)
        out = _partials(rng, phase, freq, k, k ** -rng.uniform(0.8, 1.5), sample_rate)
    elif timbre == "bell":  # inharmonic partials; the higher ones die sooner
        ratios = BELL_RATIOS * (1.0 + rng.uniform(-0.03, 0.03, size=BELL_RATIOS.size))
        progress = np.arange(freq.size) / freq.size
        decay = np.exp(-np.outer(np.arange(1, BELL_RATIOS.size + 1), progress) * 2.5)
        out = _partials(rng, phase, freq, ratios, BELL_AMPLITUDES[:, None] * decay, sample_rate)
    elif timbre == "noise":
        out = _band_noise(rng, phase, freq, sample_rate)
    elif timbre == "vowel":  # glottal-like harmonics (1/k) shaped by a vowel's formants
        count = int(min(40, 0.45 * sample_rate // freq.max()))
        k = np.arange(1, count + 1, dtype=np.float64)
        formants = VOWEL_FORMANTS[rng.integers(len(VOWEL_FORMANTS))] * rng.uniform(0.9, 1.15)
        distance = (k[:, None] * np.mean(freq) - formants[None, :]) / FORMANT_BANDWIDTHS[None, :]
        out = _partials(rng, phase, freq, k, np.sum(1.0 / (1.0 + distance**2), axis=1) / k, sample_rate)
    else:
        raise ValueError(f"unknown timbre {timbre!r}")
    return out / (np.sqrt(np.mean(out**2)) + 1e-12)


def _envelope(kind: str, n: int, sample_rate: int) -> np.ndarray:
    """Amplitude envelope of one event of ``n`` samples."""
    t = np.arange(n) / sample_rate
    duration = n / sample_rate
    if kind == "flat":  # symmetric raised-cosine edges: time reversal leaves it as is
        ramp = min(0.015, duration / 4.0)
        return 0.5 - 0.5 * np.cos(np.pi * np.clip(np.minimum(t, duration - t) / ramp, 0.0, 1.0))
    if kind == "hump":  # a syllable-like swell
        return np.sin(np.pi * (t + 0.5 / sample_rate) / duration) ** 0.7
    if kind in ("pluck", "click"):  # fast attack, exponential decay, short fade at the end
        attack, tau = (0.005, duration / 3.0) if kind == "pluck" else (0.001, duration / 4.0)
        attack = min(attack, duration / 4.0)
        fade = np.clip((duration - t) / min(0.005, duration / 4.0), 0.0, 1.0)
        return np.clip(t / attack, 0.0, 1.0) * np.exp(-t / tau) * fade
    raise ValueError(f"unknown envelope {kind!r}")


def _render(timbre: str, rng: np.random.Generator, event: _Event, sample_rate: int) -> np.ndarray:
    n = max(8, int(round(event.duration * sample_rate)))
    freq = event.f_start * (event.f_end / event.f_start) ** (np.arange(n) / n)
    return event.gain * _source(timbre, rng, freq, sample_rate) * _envelope(event.envelope, n, sample_rate)


# ---------------------------------------------------------------------------
# structures: events of one clip, with onsets relative to the first one
# ---------------------------------------------------------------------------


def _sweeps(rng, timbre, length, direction):
    """One to three exponential glides over 0.8 to 1.8 octaves, all up or all down."""
    events, time = [], 0.0
    for _ in range(rng.integers(1, 4)):
        duration = rng.uniform(0.2, 0.5)
        low, high = _pitch_interval(rng, timbre, rng.uniform(0.8, 1.8))
        start, end = (low, high) if direction > 0 else (high, low)
        events.append(_Event(time, duration, start, end, _event_gain(rng), "flat"))
        time += duration + rng.uniform(0.05, 0.25)
    return events


def _arpeggios(rng, timbre, length, direction):
    """One or two runs of 3-5 plucked notes, steps of 2-5 semitones, rising or falling.

    A falling run is a rising one played backwards: the same notes in reverse order.
    """
    events, time = [], 0.0
    for _ in range(rng.integers(1, 3)):
        semitones = np.concatenate([[0], np.cumsum(rng.integers(2, 6, size=rng.integers(2, 5)))])
        low, _ = _pitch_interval(rng, timbre, semitones[-1] / 12.0)
        pitches = low * 2.0 ** (semitones / 12.0)
        if direction < 0:
            pitches = pitches[::-1]
        step = rng.uniform(0.07, 0.15)
        for i, pitch in enumerate(pitches):
            events.append(_Event(time + i * step, step * rng.uniform(1.5, 2.5), pitch, pitch,
                                 _event_gain(rng), "pluck"))
        time += len(pitches) * step + rng.uniform(0.1, 0.3)
    return events


def _train(rng, timbre, length, direction):
    """8-14 clicks whose spacing shrinks (accelerating) or grows by a factor 3-7."""
    count = int(rng.integers(8, 15))
    spacing = rng.uniform(0.15, 0.35) ** np.linspace(0.0, 1.0, count - 1)
    if direction < 0:
        spacing = spacing[::-1]
    span = rng.uniform(0.7, 0.9) * length
    onsets = np.concatenate([[0.0], np.cumsum(spacing)]) * span / spacing.sum()
    centre = _log_uniform(rng, *PITCH_RANGES[timbre])
    duration = rng.uniform(0.01, 0.03)
    events = []
    for onset in onsets:
        pitch = centre * 2.0 ** (rng.uniform(-2.0, 2.0) / 12.0)
        events.append(_Event(onset, duration * rng.uniform(0.8, 1.2), pitch, pitch, _event_gain(rng), "click"))
    return events


def _bursts(rng, timbre, length, regular):
    """4-8 swelling bursts, evenly spaced or at spacings of 0.4-1.6 times the mean."""
    count = int(rng.integers(4, 9))
    mean_spacing = rng.uniform(0.75, 0.9) * length / count
    if regular:
        spacing = np.full(count, mean_spacing)
    else:
        weights = rng.uniform(0.4, 1.6, size=count)
        spacing = mean_spacing * weights / weights.mean()
    base = _log_uniform(rng, *PITCH_RANGES[timbre])
    events = []
    for onset in np.concatenate([[0.0], np.cumsum(spacing[:-1])]):
        pitch = base * 2.0 ** (rng.uniform(-3.0, 3.0) / 12.0)
        glide = 2.0 ** (rng.uniform(-3.0, 3.0) / 12.0)  # up or down alike: no net direction
        events.append(_Event(onset, mean_spacing * rng.uniform(0.35, 0.6), pitch, pitch * glide,
                             _event_gain(rng), "hump"))
    return events


STRUCTURES = {
    "sweep_up": lambda rng, timbre, length: _sweeps(rng, timbre, length, +1),
    "sweep_down": lambda rng, timbre, length: _sweeps(rng, timbre, length, -1),
    "arpeggio_up": lambda rng, timbre, length: _arpeggios(rng, timbre, length, +1),
    "arpeggio_down": lambda rng, timbre, length: _arpeggios(rng, timbre, length, -1),
    "train_accelerating": lambda rng, timbre, length: _train(rng, timbre, length, +1),
    "train_decelerating": lambda rng, timbre, length: _train(rng, timbre, length, -1),
    "bursts_regular": lambda rng, timbre, length: _bursts(rng, timbre, length, True),
    "bursts_irregular": lambda rng, timbre, length: _bursts(rng, timbre, length, False),
}


def _place(rng: np.random.Generator, events: List[_Event], length: float) -> List[_Event]:
    """Shrink the events' timing to fit 95% of the clip if needed, then shift it to a
    random position inside the clip."""
    extent = max(e.onset + e.duration for e in events)
    scale = min(1.0, 0.95 * length / extent)
    offset = rng.uniform(0.0, length - scale * extent)
    return [e._replace(onset=offset + scale * e.onset, duration=scale * e.duration) for e in events]


def _foreground(class_name: str, rng: np.random.Generator, n: int, sample_rate: int) -> np.ndarray:
    """The events of one clip of ``class_name``, ``n`` samples, before noise and gain."""
    structure, timbre = RECIPES[class_name]
    out = np.zeros(n)
    for event in _place(rng, STRUCTURES[structure](rng, timbre, n / sample_rate), n / sample_rate):
        samples = _render(timbre, rng, event, sample_rate)
        start = min(n - 1, int(round(event.onset * sample_rate)))
        stop = min(n, start + samples.size)
        out[start:stop] += samples[: stop - start]
    return out


def _coloured_noise(rng: np.random.Generator, n: int, sample_rate: int) -> np.ndarray:
    """Noise with power falling as 1/f^a above 20 Hz, a uniform in [0, 2] (white to brown)."""
    exponent = rng.uniform(0.0, 2.0)
    freqs = np.fft.rfftfreq(n, d=1.0 / sample_rate)
    shape = np.where(freqs >= 20.0, np.maximum(freqs, 20.0) ** (-exponent / 2.0), 0.0)
    return np.fft.irfft(np.fft.rfft(rng.standard_normal(n)) * shape, n=n)


def _power(x: np.ndarray) -> float:
    return float(np.mean(x**2)) + 1e-20


# ---------------------------------------------------------------------------
# one clip
# ---------------------------------------------------------------------------


def synthesize_clip(class_name: str, index: int, seconds: float = 2.0, sample_rate: int = 16000, seed: int = 0) -> np.ndarray:
    """Clip ``index`` of ``class_name`` as int16 samples ``[N]``.

    ``N`` is uniform in ``[SHORTEST_FRACTION, 1] * seconds * sample_rate``. Each clip has
    its own generator seeded by ``(seed, class number, index)``, so a clip does not change
    when the number of clips per class does. A distractor comes from the same split
    (seen or held out), so held-out classes never leak into the seen clips.
    """
    if class_name not in RECIPES:
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
    clips_per_class: int = 40,
    seconds: float = 2.0,
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
        f"{len(SEEN_CLASSES)} seen classes in train/valid.tsv, {len(HELDOUT_CLASSES)} held-out "
        "classes in heldout.tsv.",
    )
    parser.add_argument("out_dir", metavar="OUT_DIR", help="folder to write audio/, the .tsv manifests and .label files into")
    parser.add_argument("--clips-per-class", type=int, default=40, help="clips of each seen class (default: 40)")
    parser.add_argument("--heldout-clips-per-class", type=int, default=None,
                        help="clips of each held-out class (default: as --clips-per-class)")
    parser.add_argument("--seen-test-clips-per-class", type=int, default=0,
                        help="further clips of each seen class in seen_test.tsv, never in "
                        "train/valid (default: 0, no such split)")
    parser.add_argument("--seconds", type=float, default=2.0,
                        help=f"longest clip in seconds; lengths vary from {SHORTEST_FRACTION} times that (default: 2.0)")
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
