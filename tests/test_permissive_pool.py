"""examples/real_sounds/build_permissive_pool.py on a fake tree of the five packages.

The SoundFont and WAD files are written here byte by byte from their specifications
(RIFF sfbk with sdta/smpl and pdta/shdr; IWAD directory with DMX sound lumps), and the
Flite binary is a stand-in script that writes a tone, so every clip's length and
content can be checked against what went in.
"""

import gzip
import json
import importlib.util
import os
import stat
import struct
import sys

import numpy as np
import pytest
import soundfile as sf

from uamix_fairseq.manifest import read_manifest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FOLDER = os.path.join(REPO, "examples", "real_sounds")


def _load(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(FOLDER, name + ".py"))
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, FOLDER)
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(FOLDER)
    return module


bpp = _load("build_permissive_pool")


def _doc(tree, package):
    doc = os.path.join(tree, "usr", "share", "doc", package)
    os.makedirs(doc, exist_ok=True)
    with gzip.open(os.path.join(doc, "changelog.Debian.gz"), "wt") as f:
        f.write(f"{package} (1.0-1) unstable; urgency=medium\n\n  * fake\n")
    with open(os.path.join(doc, "copyright"), "w") as f:
        f.write("Format: dep5\n\nFiles: *\nCopyright: nobody\nLicense: MIT\n")


def _chunk(cid, payload):
    pad = b"\0" if len(payload) & 1 else b""
    return cid + struct.pack("<I", len(payload)) + payload + pad


def _list(kind, *chunks):
    return _chunk(b"LIST", kind + b"".join(chunks))


def write_sf2(path, samples):
    """``samples``: (name, int16 array, rate, type) in order; returns the raw PCM."""
    pcm, headers, at = [], [], 0
    for name, data, rate, kind in samples:
        headers.append(name.encode().ljust(20, b"\0")
                       + struct.pack("<IIIIIBbHH", at, at + len(data), at, at + len(data),
                                     rate, 60, 0, 0, kind))
        pcm.append(data.astype("<i2").tobytes() + b"\0" * 92)  # 46 zero samples between
        at += len(data) + 46
    headers.append(b"EOS".ljust(20, b"\0") + b"\0" * 26)
    body = (b"sfbk" + _list(b"INFO", _chunk(b"ifil", struct.pack("<HH", 2, 1)))
            + _list(b"sdta", _chunk(b"smpl", b"".join(pcm)))
            + _list(b"pdta", _chunk(b"shdr", b"".join(headers))))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(b"RIFF" + struct.pack("<I", len(body)) + body)


def write_wad(path, lumps):
    """``lumps``: (name, uint8 array or raw bytes, rate); arrays become DMX sounds."""
    data, directory = b"", []
    for name, body, rate in lumps:
        if isinstance(body, np.ndarray):
            body = (struct.pack("<HHI", 3, rate, len(body) + 32) + b"\x80" * 16
                    + body.astype(np.uint8).tobytes() + b"\x80" * 16)
        directory.append((12 + len(data), len(body), name))
        data += body
    table = b"".join(struct.pack("<II8s", o, s, n.encode()) for o, s, n in directory)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(b"IWAD" + struct.pack("<II", len(lumps), 12 + len(data)) + data + table)


FAKE_FLITE = """#!{python}
import sys
import numpy as np
import soundfile as sf
args = sys.argv[1:]
out = args[args.index("-o") + 1]
words = args[args.index("-t") + 1].split()
f0 = float([a for a in args if a.startswith("int_f0_target_mean=")][0].split("=")[1])
rate = 8000 if args[args.index("-voice") + 1] == "kal" else 16000
t = np.arange(int(0.25 * len(words) * rate)) / rate
sf.write(out, 0.3 * np.sin(2 * np.pi * f0 * t), rate)
"""


def make_tree(top):
    rng = np.random.default_rng(0)
    sonic = os.path.join(top, "sonic-pi-samples")
    for name, sec in [("bd_a", 0.5), ("ambi_b", 1.2), ("dup_of_bd_a", 0.5), ("tiny", 0.1)]:
        path = os.path.join(sonic, "usr", "share", "sonic-pi", "samples", name + ".flac")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        wave = 0.2 * np.sin(np.arange(int(sec * 44100)) * 0.05)
        sf.write(path, wave, 44100, format="FLAC")
    _doc(sonic, "sonic-pi-samples")

    fluid = os.path.join(top, "fluid-soundfont-gm")
    tone = lambda n, f: (8000 * np.sin(np.arange(n) * f)).astype(np.int16)  # noqa: E731
    sf2 = [("Piano C4", tone(16000, 0.03), 32000, 1),       # mono, 0.5 s
           ("Viola A(L)", tone(22050, 0.05), 44100, 4),     # left, 0.5 s
           ("Viola A(R)", tone(22050, 0.07), 44100, 2),     # right: skipped
           ("Click", tone(3000, 0.2), 44100, 1),            # 0.07 s: too short
           ("Organ long", tone(22050 * 23, 0.01), 22050, 1)]  # 23 s: three pieces
    write_sf2(os.path.join(fluid, bpp.SF2_PATH), sf2)
    _doc(fluid, "fluid-soundfont-gm")

    doom = os.path.join(top, "freedoom")
    pistol = rng.integers(0, 256, 11025).astype(np.uint8)
    write_wad(os.path.join(doom, bpp.WAD_DIR, "freedoom1.wad"),
              [("DSPISTOL", pistol, 11025), ("MAP01", b"not a sound", 0),
               ("DSSILENT", np.full(8000, 128, np.uint8), 11025)])
    write_wad(os.path.join(doom, bpp.WAD_DIR, "freedoom2.wad"), [("DSPISTOL", pistol, 11025)])
    _doc(doom, "freedoom")

    flite = os.path.join(top, "flite")
    binary = os.path.join(flite, "usr", "bin", "flite")
    os.makedirs(os.path.dirname(binary))
    with open(binary, "w") as f:
        f.write(FAKE_FLITE.format(python=sys.executable))
    os.chmod(binary, os.stat(binary).st_mode | stat.S_IEXEC)
    _doc(flite, "flite")
    _doc(os.path.join(top, "libflite1"), "libflite1")
    return {"pistol": pistol}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    top = tmp_path_factory.mktemp("packages")
    facts = make_tree(str(top))
    out = str(tmp_path_factory.mktemp("out"))
    summary = bpp.build(out, packages_dir=str(top), seed=0, speech_clips=7)
    return out, summary, facts


def _clips(out):
    clips = {}
    for split in ("train", "valid"):
        manifest = read_manifest(os.path.join(out, "permissive_pool", f"{split}.tsv"))
        for i, (rel, frames) in enumerate(zip(manifest.paths, manifest.sizes)):
            clips[rel] = (split, frames, manifest.full_path(i))
    return clips


def test_every_source_lands_once_at_16k_with_its_length(built):
    out, summary, _ = built
    clips = _clips(out)
    names = sorted(clips)
    sonic = [n for n in names if n.startswith("sonic-pi-samples/")]
    assert len(sonic) == 2  # the duplicate and the 0.1 s sample dropped
    assert [n for n in names if n.startswith("fluid-soundfont-gm/")] == [
        "fluid-soundfont-gm/0000_Piano_C4.wav", "fluid-soundfont-gm/0001_Viola_A_L_.wav",
        "fluid-soundfont-gm/0004_Organ_long__seg000.wav",
        "fluid-soundfont-gm/0004_Organ_long__seg001.wav",
        "fluid-soundfont-gm/0004_Organ_long__seg002.wav"]
    assert clips["fluid-soundfont-gm/0000_Piano_C4.wav"][1] == 8000  # 16000 at 32 kHz
    assert clips["fluid-soundfont-gm/0001_Viola_A_L_.wav"][1] == 8000
    organ = [clips[f"fluid-soundfont-gm/0004_Organ_long__seg00{k}.wav"][1] for k in range(3)]
    assert organ == [160000, 160000, 48000]
    # freedoom2's pistol is byte-identical to freedoom1's; the silent lump is dropped.
    assert [n for n in names if n.startswith("freedoom/")] == ["freedoom/freedoom1/DSPISTOL.wav"]
    assert clips["freedoom/freedoom1/DSPISTOL.wav"][1] == 16000  # 11025 samples at 11025 Hz
    speech = [n for n in names if n.startswith("flite/")]
    assert len(speech) == 7
    assert {n.split("/")[1] for n in speech} == set(bpp.FLITE_VOICES)
    for rel, (_, frames, path) in clips.items():
        wave, rate = sf.read(path)
        assert rate == 16000 and wave.ndim == 1 and len(wave) == frames, rel
    assert summary["permissive_pool"]["clips_per_source"] == {
        "sonic-pi-samples": 2, "fluid-soundfont-gm": 5, "freedoom": 1, "flite": 7}
    assert summary["permissive_pool"]["dropped_files"] == {
        "duplicate": 2, "short": 2, "silent": 1}


def test_decoded_content_matches_the_source(built):
    out, _, facts = built
    clips = _clips(out)
    pistol, _ = sf.read(clips["freedoom/freedoom1/DSPISTOL.wav"][2])
    # The DMX padding (16 bytes each side) is cut, the samples are (x - 128) / 128.
    expected = (facts["pistol"].astype(np.float64) - 128) / 128
    stretched = np.interp(np.linspace(0, len(expected) - 1, len(pistol)),
                          np.arange(len(expected)), expected)
    assert np.corrcoef(pistol, stretched)[0, 1] > 0.5  # white noise, band-limited by resampling
    piano, _ = sf.read(clips["fluid-soundfont-gm/0000_Piano_C4.wav"][2])
    peak_bin = np.argmax(np.abs(np.fft.rfft(piano)))
    # sin(0.03 n) at 32 kHz is 0.03 * 32000 / 2pi = 152.8 Hz.
    assert abs(peak_bin * 16000 / len(piano) - 0.03 * 32000 / (2 * np.pi)) < 3


def test_valid_split_keeps_segments_of_a_file_together(built):
    out, summary, _ = built
    clips = _clips(out)
    splits = {clips[f"fluid-soundfont-gm/0004_Organ_long__seg00{k}.wav"][0] for k in range(3)}
    assert len(splits) == 1
    pool = summary["permissive_pool"]
    assert pool["train_clips"] + pool["valid_clips"] == len(clips) == 15
    assert pool["valid_clips"] >= 1 and pool["train_clips"] >= 1


def test_same_seed_same_sentences_and_summary_names_licences(built, tmp_path):
    out, summary, _ = built
    assert summary["packages"]["freedoom"] == {"version": "1.0-1", "licences": ["MIT"]}
    speech = sorted(n for n in _clips(out) if n.startswith("flite/"))
    top = str(tmp_path / "packages")
    make_tree(top)
    again = bpp.build(str(tmp_path / "out"), packages_dir=top, seed=0, speech_clips=7)
    assert sorted(n for n in _clips(str(tmp_path / "out")) if n.startswith("flite/")) == speech
    other = bpp.build(str(tmp_path / "out1"), packages_dir=top, seed=1, speech_clips=7)
    assert sorted(n for n in _clips(str(tmp_path / "out1")) if n.startswith("flite/")) != speech
    assert again["permissive_pool"]["clips"] == other["permissive_pool"]["clips"]


def test_bad_files_are_named(tmp_path):
    bad = tmp_path / "bad.sf2"
    bad.write_bytes(b"RIFF\0\0\0\0WAVE")
    with pytest.raises(bpp.rs.BuildError, match="bad.sf2 is not a SoundFont 2"):
        list(bpp.sf2_samples(str(bad)))
    with pytest.raises(bpp.rs.BuildError, match="bad.sf2 is not a WAD"):
        list(bpp.wad_sounds(str(bad)))
    with pytest.raises(bpp.rs.BuildError, match="package 'sonic-pi-samples' not found"):
        bpp.build(str(tmp_path / "out"), packages_dir=str(tmp_path), speech_clips=1)


def test_command_line(tmp_path, capsys):
    with pytest.raises(SystemExit):
        bpp.main([str(tmp_path / "out"), "--speech-clips", "-1"])
    assert "--speech-clips must be >= 0" in capsys.readouterr().err
    assert bpp.main([str(tmp_path / "out"), "--packages-dir", str(tmp_path)]) == 1
    assert "package 'sonic-pi-samples' not found" in capsys.readouterr().err
    top = str(tmp_path / "packages")
    make_tree(top)
    assert bpp.main([str(tmp_path / "out"), "--packages-dir", top, "--speech-clips", "2"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["clips_per_source"]["flite"] == 2
