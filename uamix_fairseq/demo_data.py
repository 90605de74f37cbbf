"""A small deterministic synthetic corpus for the demo job.

Six sound classes that differ in temporal structure and timbre are synthesised
with numpy, written as 16-bit PCM wav files, and described by fairseq manifests
plus ``.label`` files (one class name per manifest line). The same seed gives
the same bytes on every run, and a corpus of 144 two-second clips takes a few
seconds to make.

Command line::

    python -m uamix_fairseq.demo_data OUT_DIR --clips-per-class 24 --seconds 2
"""

import argparse
import json
import os
import sys
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import soundfile as sf

from .manifest import make_manifests, read_manifest

__all__ = ["CLASSES", "main", "make_demo_corpus", "synthesize_clip"]


# ---------------------------------------------------------------------------
# signal building blocks (all take and return float64 numpy arrays)
# ---------------------------------------------------------------------------


def _log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    """A value spread evenly on a log scale, as pitches and frequencies are heard."""
    return float(np.exp(rng.uniform(np.log(low), np.log(high))))


def _smooth(gate: np.ndarray, sample_rate: int, ramp_seconds: float = 0.005) -> np.ndarray:
    """Soften the edges of a 0/1 gate with a short Hann kernel (avoids clicks)."""
    width = max(3, int(ramp_seconds * sample_rate))
    kernel = np.hanning(width)
    return np.convolve(gate.astype(np.float64), kernel / kernel.sum(), mode="same")


def _band_noise(rng: np.random.Generator, n: int, sample_rate: int, low: float, high: float) -> np.ndarray:
    """White noise band-limited to ``[low, high]`` Hz by zeroing FFT bins."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, d=1.0 / sample_rate)
    spectrum[(freqs < low) | (freqs > high)] = 0.0
    return np.fft.irfft(spectrum, n=n)


# ---------------------------------------------------------------------------
# the six classes: each maps (rng, num_samples, sample_rate) -> signal [N]
# ---------------------------------------------------------------------------


def _tone_bursts(rng, n, sr):
    """A sine at one random pitch, gated on and off at a regular period."""
    t = np.arange(n) / sr
    freq = _log_uniform(rng, 300.0, 3000.0)
    period = rng.uniform(0.12, 0.4)
    duty = rng.uniform(0.25, 0.6)
    gate = _smooth((t % period) < duty * period, sr)
    return np.sin(2 * np.pi * freq * t + rng.uniform(0, 2 * np.pi)) * gate


def _chirps(rng, n, sr):
    """Repeated exponential sweeps, all rising or all falling."""
    t = np.arange(n) / sr
    low = _log_uniform(rng, 200.0, 1500.0)
    high = min(low * rng.uniform(2.5, 5.0), 0.4 * sr)
    sweep = rng.uniform(0.25, 0.7)
    period = sweep + rng.uniform(0.05, 0.2)
    position = (t % period) / sweep  # 0..1 inside a sweep, > 1 in the gap
    inside = position < 1.0
    progress = np.clip(position, 0.0, 1.0)
    if rng.random() < 0.5:
        progress = 1.0 - progress  # falling
    freq = low * (high / low) ** progress
    phase = 2 * np.pi * np.cumsum(freq) / sr
    return np.sin(phase) * _smooth(inside, sr)


def _clicks(rng, n, sr):
    """An irregular train of short damped resonant clicks at a random rate."""
    rate = rng.uniform(4.0, 30.0)
    intervals = rng.uniform(0.6, 1.4, size=int(rate * n / sr) + 2) / rate
    times = np.cumsum(intervals) - intervals[0] * rng.random()
    idx = (times[(times >= 0) & (times < n / sr)] * sr).astype(int)
    impulses = np.zeros(n)
    impulses[idx] = rng.uniform(0.5, 1.0, size=idx.size)
    k = np.arange(int(0.008 * sr)) / sr
    ring = _log_uniform(rng, 1000.0, 5000.0)
    kernel = np.sin(2 * np.pi * ring * k) * np.exp(-k / rng.uniform(0.001, 0.003))
    return np.convolve(impulses, kernel)[:n]


def _noise_bands(rng, n, sr):
    """Third-octave-ish band of noise with a slow amplitude modulation."""
    t = np.arange(n) / sr
    centre = _log_uniform(rng, 300.0, 5000.0)
    spread = 2.0 ** rng.uniform(0.15, 0.4)
    noise = _band_noise(rng, n, sr, centre / spread, centre * spread)
    depth = rng.uniform(0.5, 0.9)
    modulation = 1.0 + depth * np.sin(2 * np.pi * rng.uniform(0.5, 4.0) * t + rng.uniform(0, 2 * np.pi))
    return noise * modulation


def _harmonic_notes(rng, n, sr):
    """One to four plucked notes: harmonic stacks with exponential decay."""
    t = np.arange(n) / sr
    out = np.zeros(n)
    duration = n / sr
    for onset in np.sort(rng.uniform(0.0, 0.75 * duration, size=rng.integers(1, 5))):
        f0 = _log_uniform(rng, 110.0, 880.0)
        tilt = rng.uniform(0.5, 1.5)
        local = t - onset
        envelope = np.where(local >= 0, np.exp(-np.maximum(local, 0) * rng.uniform(2.0, 8.0)), 0.0)
        envelope *= np.clip(local / 0.005, 0.0, 1.0)  # 5 ms attack
        num_harmonics = int(min(10, 0.45 * sr // f0))
        for k in range(1, num_harmonics + 1):  # a loop over harmonics, not samples
            out += envelope * k**-tilt * np.sin(2 * np.pi * k * f0 * local)
    return out


def _speechlike(rng, n, sr):
    """A glottal-like harmonic source shaped by three moving formants, in syllables."""
    t = np.arange(n) / sr
    base = _log_uniform(rng, 90.0, 250.0)
    f0 = base * (1.0 + 0.12 * np.sin(2 * np.pi * rng.uniform(0.3, 1.0) * t + rng.uniform(0, 2 * np.pi)))
    phase = 2 * np.pi * np.cumsum(f0) / sr
    syllable_rate = rng.uniform(3.0, 6.0)
    formants = []
    for centre, span, bandwidth in ((550.0, 200.0, 90.0), (1500.0, 500.0, 130.0), (2600.0, 250.0, 180.0)):
        track = centre * rng.uniform(0.85, 1.15) + span * np.sin(
            2 * np.pi * syllable_rate * rng.uniform(0.5, 1.0) * t + rng.uniform(0, 2 * np.pi)
        )
        formants.append((track, bandwidth))
    out = np.zeros(n)
    for k in range(1, int(0.45 * sr / f0.min()) + 1):
        freq = k * f0
        # Lorentzian resonance gains at each harmonic's frequency, times a
        # glottal spectral tilt of 1/k; harmonics near Nyquist are dropped.
        gain = sum(1.0 / (1.0 + ((freq - track) / bw) ** 2) for track, bw in formants)
        out += (freq < 0.45 * sr) * gain / k * np.sin(k * phase)
    syllables = np.clip(np.sin(2 * np.pi * syllable_rate * t + rng.uniform(0, 2 * np.pi)), 0.0, None) ** 0.7
    return out * syllables


CLASSES: Dict[str, Callable[[np.random.Generator, int, int], np.ndarray]] = {
    "tone_bursts": _tone_bursts,
    "chirps": _chirps,
    "clicks": _clicks,
    "noise_bands": _noise_bands,
    "harmonic_notes": _harmonic_notes,
    "speechlike": _speechlike,
}


# ---------------------------------------------------------------------------
# one clip
# ---------------------------------------------------------------------------


def _place_and_level(rng, signal: np.ndarray, sample_rate: int) -> np.ndarray:
    """Delay the sound by a random onset, set a random peak level, add a noise floor.

    The noise floor (35-50 dB below the peak) keeps every clip non-silent, also
    before the onset.
    """
    n = signal.size
    onset = int(rng.uniform(0.0, 0.25) * n)
    placed = np.zeros(n)
    placed[onset:] = signal[: n - onset]
    placed[onset:] *= np.clip(np.arange(n - onset) / (0.005 * sample_rate), 0.0, 1.0)  # fade in
    peak = np.abs(placed).max()
    if peak > 0:
        placed /= peak
    level = 10.0 ** (rng.uniform(-14.0, -2.0) / 20.0)  # peak between about 0.2 and 0.8
    floor = level * 10.0 ** (-rng.uniform(35.0, 50.0) / 20.0)
    return level * placed + floor * rng.standard_normal(n)


def synthesize_clip(class_name: str, index: int, seconds: float = 2.0, sample_rate: int = 16000, seed: int = 0) -> np.ndarray:
    """Clip ``index`` of ``class_name`` as int16 samples ``[N]``.

    Each clip has its own generator seeded by ``(seed, class number, index)``, so
    a clip does not change when the number of clips per class does.
    """
    if class_name not in CLASSES:
        raise ValueError(f"unknown demo class {class_name!r}; choose from {', '.join(CLASSES)}")
    class_number = list(CLASSES).index(class_name)
    rng = np.random.default_rng([seed, class_number, index])
    n = int(round(seconds * sample_rate))
    signal = _place_and_level(rng, CLASSES[class_name](rng, n, sample_rate), sample_rate)
    # Quantise here rather than in libsndfile so the bytes depend only on numpy.
    return np.round(np.clip(signal, -1.0, 1.0) * 32767.0).astype(np.int16)


# ---------------------------------------------------------------------------
# the corpus
# ---------------------------------------------------------------------------


def _expected_files(audio_dir: str, clips_per_class: int) -> List[str]:
    return [
        os.path.join(audio_dir, name, f"{name}_{i:03d}.wav")
        for name in CLASSES
        for i in range(clips_per_class)
    ]


def _refuse_stale_files(audio_dir: str, expected: Sequence[str]) -> None:
    """Stop if ``audio_dir`` holds files this run would not write.

    They would end up in the manifests (e.g. clips from an earlier run with more
    clips per class), and deleting a user's files is not our call.
    """
    if not os.path.isdir(audio_dir):
        return
    wanted = set(expected)
    for folder, _, files in os.walk(audio_dir):
        for name in files:
            path = os.path.join(folder, name)
            if path not in wanted:
                raise ValueError(
                    f"{audio_dir} already holds {path}, which this demo corpus would "
                    "not write; delete the folder or choose another OUT_DIR"
                )


def _write_labels(manifest_path: str, label_path: str) -> List[str]:
    """Write one class name per clip line of ``manifest_path``, in its order."""
    manifest = read_manifest(manifest_path)
    labels = [rel.replace(os.sep, "/").split("/")[0] for rel in manifest.paths]
    with open(label_path, "w", encoding="utf-8") as handle:
        handle.write("".join(label + "\n" for label in labels))
    return labels


def make_demo_corpus(
    out_dir,
    clips_per_class: int = 24,
    seconds: float = 2.0,
    sample_rate: int = 16000,
    seed: int = 0,
    valid_percent: float = 0.1,
) -> Dict:
    """Write the demo corpus, its manifests and label files under ``out_dir``.

    Layout::

        out_dir/audio/<class>/<class>_<i>.wav   16-bit PCM mono
        out_dir/train.tsv, out_dir/valid.tsv    fairseq manifests
        out_dir/train.label, out_dir/valid.label  one class name per clip line

    Returns:
        Summary dict: ``out_dir``, ``audio_dir``, ``classes``, ``clips_per_class``,
        ``num_clips``, ``seconds``, ``sample_rate``, ``num_train``,
        ``num_valid``, ``train_manifest``, ``valid_manifest``, ``train_labels``,
        ``valid_labels`` (None when no valid split), ``class_counts``
        (``{split: {class: count}}``).
    """
    if clips_per_class < 1:
        raise ValueError(f"clips_per_class must be at least 1, got {clips_per_class}")
    if seconds * sample_rate < 400:
        raise ValueError(
            f"seconds={seconds} at {sample_rate} Hz is shorter than one 25 ms frame; use longer clips"
        )
    out_dir = os.path.abspath(os.fspath(out_dir))
    audio_dir = os.path.join(out_dir, "audio")
    expected = _expected_files(audio_dir, clips_per_class)
    _refuse_stale_files(audio_dir, expected)

    for path in expected:
        class_name, file_name = path.split(os.sep)[-2:]
        index = int(file_name[len(class_name) + 1 : -len(".wav")])
        os.makedirs(os.path.dirname(path), exist_ok=True)
        samples = synthesize_clip(class_name, index, seconds, sample_rate, seed)
        sf.write(path, samples, sample_rate, subtype="PCM_16")

    manifests = make_manifests(audio_dir, out_dir, valid_percent=valid_percent, extensions=("wav",), seed=seed)
    summary = {
        "out_dir": out_dir,
        "audio_dir": audio_dir,
        "classes": list(CLASSES),
        "clips_per_class": clips_per_class,
        "num_clips": len(expected),
        "seconds": seconds,
        "sample_rate": sample_rate,
        "num_train": manifests["num_train"],
        "num_valid": manifests["num_valid"],
        "train_manifest": manifests["train_manifest"],
        "valid_manifest": manifests["valid_manifest"],
        "train_labels": None,
        "valid_labels": None,
        "class_counts": {},
    }
    for split in ("train", "valid"):
        manifest_path = manifests[f"{split}_manifest"]
        if manifest_path is None:
            continue
        label_path = os.path.join(out_dir, f"{split}.label")
        labels = _write_labels(manifest_path, label_path)
        summary[f"{split}_labels"] = label_path
        summary["class_counts"][split] = {name: labels.count(name) for name in CLASSES}
    return summary


# ---------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command-line entry point; prints the summary as JSON."""
    parser = argparse.ArgumentParser(
        prog="python -m uamix_fairseq.demo_data",
        description="Write the deterministic synthetic demo corpus (wav files, manifests, labels).",
    )
    parser.add_argument("out_dir", metavar="OUT_DIR", help="folder to write audio/, train.tsv, valid.tsv and .label files into")
    parser.add_argument("--clips-per-class", type=int, default=24, help="clips of each of the six classes (default: 24)")
    parser.add_argument("--seconds", type=float, default=2.0, help="length of every clip in seconds (default: 2.0)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthesis and of the valid split (default: 0)")
    parser.add_argument(
        "--valid-percent",
        type=float,
        default=0.1,
        help="fraction in [0, 1) of the clips put in valid.tsv (default: 0.1)",
    )
    args = parser.parse_args(argv)
    try:
        summary = make_demo_corpus(
            args.out_dir,
            clips_per_class=args.clips_per_class,
            seconds=args.seconds,
            seed=args.seed,
            valid_percent=args.valid_percent,
        )
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
