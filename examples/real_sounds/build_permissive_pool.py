#!/usr/bin/env python3
"""Build an unlabelled pool of real audio whose licences allow sharing a model trained on it.

    python examples/real_sounds/build_permissive_pool.py OUT_DIR [--cache DIR]
        [--packages-dir DIR] [--seed 0] [--speech-clips 600]

The pool of ``build_real_sounds.py`` mixes GPL and CC-BY-SA audio, so a model pretrained
on it should not be published as freely licensed. This pool takes only sources under
permissive terms (README.md beside this file, "The permissive pool", lists them with
their copyright files' wording):

- ``sonic-pi-samples``: Sonic Pi's samples (CC0; 35 under the file's MIT catch-all);
- ``fluid-soundfont-gm``: every mono or left-channel sample of the Fluid R3 General MIDI
  sound font (MIT): single notes of 128 instruments and the drum kits;
- ``freedoom``: the sound effects (``DS*`` lumps) of Freedoom's two WAD files (BSD-style);
- ``flite``: sentences spoken by the CMU Flite synthesiser's five voices (a BSD-style
  licence from CMU and Edinburgh), each clip with its own pitch and speaking rate. The
  sentences are drawn from a word list written for this script.

Everything is decoded to 16 kHz mono 16-bit wav under ``OUT_DIR/audio/permissive_pool/``
with the same rules as the real-sounds pool (clips under 0.3 s and silent clips dropped,
byte-identical sources kept once, files over 10 s cut into 10 s segments) and listed in
``OUT_DIR/permissive_pool/{train,valid}.tsv``; ``OUT_DIR/permissive_summary.json`` has
the counts, package versions and licence names. Needs ``apt-get`` and ``dpkg-deb`` (or
``--packages-dir`` with extracted trees), numpy, soundfile and torch.
"""

import glob
import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np
import soundfile as sf
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import build_real_sounds as rs  # noqa: E402

NAME = "permissive_pool"
PACKAGES = ("sonic-pi-samples", "fluid-soundfont-gm", "freedoom", "flite", "libflite1")
SF2_PATH = "usr/share/sounds/sf2/FluidR3_GM.sf2"
WAD_DIR = "usr/share/games/doom"
FLITE_VOICES = ("kal", "kal16", "awb", "rms", "slt")
DEFAULT_SPEECH_CLIPS = 600
# Our own word list (no third-party text): sentences are random sequences of these.
WORDS = (
    "the a one two three seven green red old new small large quiet loud river stone "
    "bridge window garden morning evening winter summer market station letter number "
    "train boat road house table music water light paper voice city field forest "
    "under over near behind before after slowly quickly always never often today "
    "tonight tomorrow walks opens closes carries finds brings reads writes waits "
    "turns sings calls moves stands falls holds and but with from into across"
).split()


# ---------------------------------------------------------------------------
# readers of the three non-file formats (each yields (name, waveform, rate))
# ---------------------------------------------------------------------------


def sf2_samples(path: str) -> Iterator[Tuple[str, np.ndarray, int]]:
    """The mono and left-channel samples of a SoundFont 2 file (16-bit PCM in
    ``sdta/smpl``, one 46-byte header per sample in ``pdta/shdr``, the last a
    terminator). Right channels (type 2) are skipped: they repeat their left partner."""
    with open(path, "rb") as handle:
        data = handle.read()
    if data[:4] != b"RIFF" or data[8:12] != b"sfbk":
        raise rs.BuildError(f"{path} is not a SoundFont 2 file (no RIFF sfbk header)")
    chunks = {}
    pos = 12
    while pos + 12 <= len(data):
        size = struct.unpack_from("<I", data, pos + 4)[0]
        sub, end = pos + 12, pos + 8 + size
        while sub + 8 <= end:
            sub_size = struct.unpack_from("<I", data, sub + 4)[0]
            chunks[data[sub:sub + 4]] = (sub + 8, sub_size)
            sub += 8 + sub_size + (sub_size & 1)
        pos = end + (size & 1)
    if b"smpl" not in chunks or b"shdr" not in chunks:
        raise rs.BuildError(f"{path} has no smpl or shdr chunk; is the file complete?")
    smpl_at, smpl_size = chunks[b"smpl"]
    pcm = np.frombuffer(data, dtype="<i2", count=smpl_size // 2, offset=smpl_at)
    shdr_at, shdr_size = chunks[b"shdr"]
    for i in range(shdr_size // 46 - 1):
        record = data[shdr_at + 46 * i: shdr_at + 46 * (i + 1)]
        name = record[:20].split(b"\0")[0].decode("latin-1").strip()
        start, end, _, _, rate = struct.unpack_from("<IIIII", record, 20)
        kind = struct.unpack_from("<H", record, 44)[0]
        if kind not in (1, 4) or end <= start or end > pcm.shape[0] or rate <= 0:
            continue
        yield f"{i:04d}_{name}", pcm[start:end].astype(np.float32) / 32768.0, int(rate)


def wad_sounds(path: str) -> Iterator[Tuple[str, np.ndarray, int]]:
    """The ``DS*`` sound lumps of a Doom WAD: a DMX header (format 3, rate, sample
    count), 16 pad bytes, unsigned 8-bit samples, 16 pad bytes."""
    with open(path, "rb") as handle:
        data = handle.read()
    if data[:4] not in (b"IWAD", b"PWAD"):
        raise rs.BuildError(f"{path} is not a WAD file (no IWAD/PWAD header)")
    count, directory = struct.unpack_from("<II", data, 4)
    for i in range(count):
        offset, size, raw_name = struct.unpack_from("<II8s", data, directory + 16 * i)
        name = raw_name.split(b"\0")[0].decode("latin-1")
        if not name.startswith("DS") or size < 8 + 32:
            continue
        fmt, rate, samples = struct.unpack_from("<HHI", data, offset)
        if fmt != 3 or samples <= 32 or 8 + samples > size:
            continue
        raw = np.frombuffer(data, dtype=np.uint8, count=samples - 32, offset=offset + 8 + 16)
        yield name, (raw.astype(np.float32) - 128.0) / 128.0, int(rate)


def flite_speech(tree: str, lib_tree: str, clips: int, seed: int,
                 ) -> Iterator[Tuple[str, np.ndarray, int]]:
    """``clips`` sentences from the Flite binary of ``tree``, voices in turn, each
    with a random pitch (mean F0 80-240 Hz) and speaking rate (0.8-1.3x duration)."""
    binary = os.path.join(tree, "usr", "bin", "flite")
    env = dict(os.environ)
    # The multiarch library folder (x86_64-linux-gnu, aarch64-linux-gnu, ...).
    libs = sorted(glob.glob(os.path.join(tree, "usr", "lib", "*-linux-gnu"))
                  + glob.glob(os.path.join(lib_tree, "usr", "lib", "*-linux-gnu")))
    env["LD_LIBRARY_PATH"] = os.pathsep.join(libs + [env.get("LD_LIBRARY_PATH", "")])
    rng = np.random.default_rng([seed, 3000])
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "speech.wav")
        for k in range(clips):
            voice = FLITE_VOICES[k % len(FLITE_VOICES)]
            text = " ".join(rng.choice(WORDS, size=int(rng.integers(5, 13))))
            f0 = int(rng.integers(80, 241))
            stretch = float(rng.uniform(0.8, 1.3))
            cmd = [binary, "-voice", voice, "--setf", f"int_f0_target_mean={f0}",
                   "--setf", f"duration_stretch={stretch:.2f}", "-t", text, "-o", out]
            try:
                result = subprocess.run(cmd, env=env, capture_output=True, text=True)
            except OSError as err:
                raise rs.BuildError(f"cannot run {binary} ({err}); is the flite package "
                                    "for this machine's architecture?") from None
            if result.returncode != 0:
                raise rs.BuildError(f"{' '.join(cmd)} failed: {result.stderr.strip()}")
            wave, rate = sf.read(out, dtype="float32")
            yield f"{voice}/{k:04d}_f0{f0}_x{stretch:.2f}", wave, int(rate)


# ---------------------------------------------------------------------------
# the pool
# ---------------------------------------------------------------------------


def _to_16k(wave: np.ndarray, rate: int) -> Tuple[Optional[np.ndarray], str]:
    if wave.ndim > 1:
        wave = wave.mean(axis=1)
    wave = np.ascontiguousarray(wave, dtype=np.float32)
    if rate != rs.SAMPLE_RATE:
        wave = rs.resample_waveform(torch.from_numpy(wave), rate, rs.SAMPLE_RATE).numpy()
    return rs.check_clip(wave)


def _sources(packages: dict, speech_clips: int, seed: int
             ) -> Iterator[Tuple[str, bytes, Optional[np.ndarray], int]]:
    """``(output name, bytes to deduplicate on, waveform or None, rate)`` per source;
    a None waveform means: decode the bytes as an audio file."""
    for source in rs.find_sources(packages["sonic-pi-samples"]):
        yield rs.output_name(source), source.read_bytes(), None, 0
    tree = packages["fluid-soundfont-gm"].tree
    for name, wave, rate in sf2_samples(os.path.join(tree, SF2_PATH)):
        yield f"fluid-soundfont-gm/{_safe(name)}", wave.tobytes(), wave, rate
    wad_dir = os.path.join(packages["freedoom"].tree, WAD_DIR)
    for wad in sorted(f for f in os.listdir(wad_dir) if f.endswith(".wad")):
        for name, wave, rate in wad_sounds(os.path.join(wad_dir, wad)):
            yield f"freedoom/{wad[:-4]}/{name}", wave.tobytes(), wave, rate
    for name, wave, rate in flite_speech(packages["flite"].tree, packages["libflite1"].tree,
                                         speech_clips, seed):
        yield f"flite/{name}", wave.tobytes(), wave, rate


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_#" else "_" for c in name)


def build(out_dir: str, cache: Optional[str] = None, packages_dir: Optional[str] = None,
          seed: int = 0, speech_clips: int = DEFAULT_SPEECH_CLIPS) -> dict:
    start = time.time()
    out_dir = os.path.abspath(out_dir)
    cache = os.path.abspath(cache or os.path.join(out_dir, "debs"))
    packages = {name: rs.get_package(name, cache, packages_dir) for name in PACKAGES}
    audio_root = os.path.join(out_dir, "audio", NAME)
    shutil.rmtree(audio_root, ignore_errors=True)
    seen, dropped, per_source = set(), Counter(), Counter()
    groups: List[List[Tuple[str, int]]] = []
    for name, raw, wave, rate in _sources(packages, speech_clips, seed):
        digest = hashlib.sha1(raw).hexdigest()
        if digest in seen:
            dropped["duplicate"] += 1
            continue
        seen.add(digest)
        wave, reason = rs.decode(raw, name) if wave is None else _to_16k(wave, rate)
        if wave is None:
            dropped[reason.split(" ")[0]] += 1
            continue
        pieces = rs.segments(wave)
        if not pieces:
            dropped["silent"] += 1
            continue
        base = os.path.splitext(name)[0] if name.endswith(".wav") else name
        names = ([base + ".wav"] if len(pieces) == 1
                 else [f"{base}__seg{k:03d}.wav" for k in range(len(pieces))])
        groups.append([(n, rs.write_wav(os.path.join(audio_root, n), p))
                       for n, p in zip(names, pieces)])
        per_source[name.split("/")[0]] += len(pieces)
    if not groups:
        raise rs.BuildError(f"the {NAME} is empty: no readable, non-silent audio in "
                            f"{', '.join(PACKAGES)}")
    summary = {
        "out_dir": out_dir,
        "sample_rate": rs.SAMPLE_RATE,
        "seed": seed,
        "speech_clips": speech_clips,
        "packages": {n: {"version": p.version, "licences": p.licences}
                     for n, p in packages.items()},
        NAME: rs.write_grouped_split(out_dir, NAME, audio_root, groups, seed),
    }
    summary[NAME].update({"clips_per_source": dict(per_source),
                          "dropped_files": dict(sorted(dropped.items()))})
    summary["build_seconds"] = round(time.time() - start, 1)
    with open(os.path.join(out_dir, "permissive_summary.json"), "w", encoding="utf-8") as handle:
        json.dump(summary, handle, indent=2)
        handle.write("\n")
    return summary


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = rs.package_arguments(__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the spoken sentences and the valid split (default: 0)")
    parser.add_argument("--speech-clips", type=int, default=DEFAULT_SPEECH_CLIPS,
                        help=f"sentences to synthesise with Flite (default: {DEFAULT_SPEECH_CLIPS})")
    args = parser.parse_args(argv)
    if args.speech_clips < 0:
        parser.error(f"--speech-clips must be >= 0, got {args.speech_clips}")
    try:
        summary = build(args.out_dir, args.cache, args.packages_dir, args.seed, args.speech_clips)
    except rs.BuildError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(json.dumps(summary[NAME], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
