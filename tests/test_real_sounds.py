"""examples/real_sounds/build_real_sounds.py on a small fake tree of extracted packages.

The fake trees copy the real packages' layout (asterisk prompts per language, a
ufoai .pk3 archive of sound/<category>/ files, Sonic Pi flac samples, Fish Fillets
dialog lines, long game music) with short synthetic 44.1 kHz stereo clips.
"""

import gzip
import importlib.util
import io
import json
import math
import os
import shutil
import subprocess
import zipfile

import numpy as np
import pytest
import soundfile as sf

from uamix_fairseq.labels import read_labels
from uamix_fairseq.manifest import read_manifest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILDER = os.path.join(REPO, "examples", "real_sounds", "build_real_sounds.py")


def _load_builder():
    spec = importlib.util.spec_from_file_location("build_real_sounds", BUILDER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


brs = _load_builder()

# package -> voice folder, as in the real packages (en and es: the same voice).
SPEAKERS = {
    "asterisk-core-sounds-en-wav": ("en_US_f_Allison", "Allison"),
    "asterisk-core-sounds-es-wav": ("es_MX_f_Allison", "Allison"),
    "asterisk-core-sounds-fr-wav": ("fr_CA_f_June", "June"),
    "asterisk-core-sounds-it-wav": ("it_IT_m_Carlo", "Carlo"),
    "asterisk-core-sounds-ru-wav": ("ru_RU_f_IvrvoiceRU", "IvrvoiceRU"),
    "asterisk-prompt-it-menardi-wav": ("it_IT_f_Menardi", "Menardi"),
    "asterisk-prompt-fr-armelle": ("fr", "Armelle"),  # headerless GSM files
}
VOICES = ("Allison", "Armelle", "Carlo", "IvrvoiceRU", "June", "Menardi")
UFO_KEPT = ("aliens", "ambience", "footsteps", "soldiers", "weapons")


def _tone(seconds, rate=44100, channels=2, freq=440.0, amp=0.3, seed=0):
    n = int(round(seconds * rate))
    t = np.arange(n) / rate
    rng = np.random.default_rng(seed)
    mono = amp * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(n)
    if channels == 1:
        return mono.astype(np.float32)
    return np.stack([mono, 0.5 * mono], axis=1).astype(np.float32)


def _write(path, wave, rate=44100, fmt=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if fmt == "RAW":
        sf.write(path, wave, rate, format="RAW", subtype="GSM610")
    else:
        sf.write(path, wave, rate, format=fmt)


def _encoded(wave, rate=44100, fmt="OGG"):
    buf = io.BytesIO()
    sf.write(buf, wave, rate, format=fmt)
    return buf.getvalue()


def _doc(tree, package, version=None, licence=None):
    doc = os.path.join(tree, "usr", "share", "doc", package)
    os.makedirs(doc, exist_ok=True)
    if version:
        with gzip.open(os.path.join(doc, "changelog.Debian.gz"), "wt") as f:
            f.write(f"{package} ({version}) unstable; urgency=medium\n\n  * fake\n")
    if licence:
        with open(os.path.join(doc, "copyright"), "w") as f:
            f.write(f"Format: dep5\n\nFiles: *\nCopyright: nobody\nLicense: {licence}\n")


def make_fake_packages(top):
    """Returns {set or package: facts} the checks below compare against."""
    facts = {"speakers": {}, "ufoai": {}, "pool_long_frames": None}
    # asterisk prompts: 16 per voice folder (mono 8 kHz like the real ones) + a silent one.
    for i, (pkg, (voice, _)) in enumerate(SPEAKERS.items()):
        tree = os.path.join(top, pkg)
        _doc(tree, pkg, "1.6.1-1", "CC-BY-SA-3.0")
        sounds = os.path.join(tree, "usr", "share", "asterisk", "sounds")
        folder = os.path.join(sounds, voice)
        gsm = pkg.endswith("armelle")
        for k in range(16):
            wave = _tone(0.35 + 0.01 * k, 8000, 1, 200 + 50 * i + k, seed=100 * i + k)
            if gsm:
                _write(os.path.join(folder, "digits", f"{k}.gsm"), wave, 8000, fmt="RAW")
            else:
                _write(os.path.join(folder, "digits", f"{k}.wav"), wave, 8000)
        _write(os.path.join(folder, "silence", "1.wav"), np.zeros(8000, np.float32), 8000)
        if gsm:  # the real package links sounds/digits/* to sounds/fr/digits/*: skipped
            os.makedirs(os.path.join(sounds, "digits"))
            os.symlink(os.path.join(folder, "digits", "0.gsm"), os.path.join(sounds, "digits", "0.gsm"))
            os.symlink(os.path.join(folder, "nothing.gsm"), os.path.join(sounds, "digits", "gone.gsm"))

    # ufoai-sound: one pk3 archive; 5 categories of 16 clips (one of them too short),
    # one silent clip, and a category of 3 that must be dropped.
    pkg = "ufoai-sound"
    tree = os.path.join(top, pkg)
    _doc(tree, pkg, "2.5-2", "GPL-2+")
    pk3 = os.path.join(tree, "usr", "share", "games", "ufoai", "base", "0snd.pk3")
    os.makedirs(os.path.dirname(pk3))
    with zipfile.ZipFile(pk3, "w") as archive:
        archive.writestr("sound/", b"")
        for c, category in enumerate(UFO_KEPT):
            for k in range(16):
                seconds = 0.1 if (c == 0 and k == 0) else 0.4 + 0.01 * k
                frames = int(round(seconds * 44100))
                archive.writestr(f"sound/{category}/s{k:02d}.ogg",
                                 _encoded(_tone(seconds, freq=300 + 40 * c + k, seed=c * 50 + k)))
                if seconds >= 0.3:
                    facts["ufoai"][f"{category}/s{k:02d}"] = frames
        archive.writestr("sound/aliens/quiet.ogg", _encoded(np.zeros((30000, 2), np.float32)))
        for k in range(3):
            archive.writestr(f"sound/ui/click{k}.ogg", _encoded(_tone(0.5, freq=900 + k, seed=900 + k)))
        archive.writestr("textures/readme.txt", b"not audio")

    # sonic-pi-samples: flac files of three families (too few for a set, kept in the pool).
    pkg = "sonic-pi-samples"
    folder = os.path.join(top, pkg, "usr", "share", "sonic-pi", "samples")
    for k, name in enumerate(("bd_boom", "sn_dub", "ambi_drone")):
        _write(os.path.join(folder, f"{name}.flac"), _tone(0.5, freq=100 + 30 * k, seed=300 + k), fmt="FLAC")

    # Fish Fillets dialogs (cs, nl): a repeated file in two levels counts once.
    for lang in ("cs", "nl"):
        pkg = f"fillets-ng-data-{lang}"
        base = os.path.join(top, pkg, "usr", "share", "games", "fillets-ng", "sound")
        line = _tone(0.6, 22050, 1, 500 if lang == "cs" else 520, seed=400)
        _write(os.path.join(base, "cabin1", lang, "k1-m-ahoj.ogg"), line, 22050)
        # Byte copies, as the real package repeats files (ogg encoding is not byte-stable).
        os.makedirs(os.path.join(base, "cabin2", lang))
        shutil.copy(os.path.join(base, "cabin1", lang, "k1-m-ahoj.ogg"),
                    os.path.join(base, "cabin2", lang, "k1-m-ahoj.ogg"))
        _write(os.path.join(base, "city", lang, "vit-v-proc.ogg"), _tone(0.7, 22050, 1, 600, seed=401), 22050)

    # Game packages of the pool: one long music track (25 s: cut into 10 + 10 + 5 s).
    music = os.path.join(top, "wesnoth-1.16-music", "usr", "share", "games", "wesnoth", "1.16",
                         "data", "core", "music", "theme.ogg")
    _write(music, _tone(25.0, freq=220, seed=500))
    facts["pool_long_frames"] = 25 * 44100
    for k, pkg in enumerate(("minetest-data", "wesnoth-1.16-data", "warmux-data",
                             "lincity-ng-data", "fillets-ng-data")):
        _write(os.path.join(top, pkg, "usr", "share", "games", pkg, "sounds", f"fx{k}.wav"),
               _tone(0.8, freq=700 + 10 * k, seed=600 + k))
        # Documentation audio is not part of a package's sounds.
        _write(os.path.join(top, pkg, "usr", "share", "doc", pkg, "example.wav"), _tone(0.5, seed=1))
    # A copy of a held-out speaker prompt inside a pool package must stay out of the pool.
    shutil.copy(os.path.join(top, "asterisk-core-sounds-en-wav", "usr", "share", "asterisk",
                             "sounds", "en_US_f_Allison", "digits", "3.wav"),
                os.path.join(top, "warmux-data", "usr", "share", "games", "warmux-data", "sounds", "copy.wav"))
    return facts


def _expected_16k(frames, rate):
    return math.ceil(frames * 16000 / rate)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    top = tmp_path_factory.mktemp("pkgs")
    facts = make_fake_packages(str(top))
    out = tmp_path_factory.mktemp("out")
    rc = brs.main([str(out), "--packages-dir", str(top), "--seed", "0", "--max-per-class", "15"])
    assert rc == 0
    with open(out / "summary.json") as f:
        summary = json.load(f)
    return top, out, facts, summary


def test_ufoai_set_keeps_five_classes_and_drops_the_small_one(built):
    top, out, facts, summary = built
    manifest = read_manifest(out / "ufoai_categories.tsv")
    labels = read_labels(out / "ufoai_categories.tsv")
    assert manifest.root == os.path.join(str(out), "audio", "ufoai_categories")
    assert len(labels) == len(manifest) == 5 * 15
    info = summary["sets"]["ufoai_categories"]
    assert info["classes"] == {c: 15 for c in UFO_KEPT}
    assert info["dropped_classes"] == {"ui": 3}
    assert info["dropped_files"] == {"short": 1, "silent": 1}
    prefix = "ufoai-sound/ufoai/base/0snd.pk3/sound/"
    for rel, size, (label,) in zip(manifest.paths, manifest.sizes, labels):
        assert rel.startswith(prefix) and rel.endswith("_ogg.wav")
        category, name = rel[len(prefix):-len("_ogg.wav")].split("/")
        assert label == category  # labels line up with the manifest lines
        frames = facts["ufoai"][f"{category}/{name}"]
        assert size == _expected_16k(frames, 44100)
        written = sf.info(os.path.join(manifest.root, rel))
        assert (written.samplerate, written.channels, written.frames) == (16000, 1, size)
        assert written.subtype == "PCM_16"
    # aliens had 16 clips, one too short: all 15 others are kept.
    aliens = sorted(p.rsplit("/", 1)[1] for p, (l,) in zip(manifest.paths, labels) if l == "aliens")
    assert aliens == [f"s{k:02d}_ogg.wav" for k in range(1, 16)]
    assert sorted(manifest.paths) == manifest.paths


def test_speakers_are_sampled_per_voice_and_resampled_from_8k(built):
    top, out, facts, summary = built
    manifest = read_manifest(out / "speakers.tsv")
    labels = [l for (l,) in read_labels(out / "speakers.tsv")]
    assert summary["sets"]["speakers"]["classes"] == {voice: 15 for voice in VOICES}
    assert summary["sets"]["speakers"]["in_pool"] is False
    packages_of = {}
    for rel, size, label in zip(manifest.paths, manifest.sizes, labels):
        package, _, _, folder, digits, name = rel.split("/")
        assert (folder, label) == SPEAKERS[package] and digits == "digits"
        source = os.path.join(top, package, "usr", "share", "asterisk", "sounds", folder, digits)
        if package.endswith("armelle"):
            k = int(name[:-len("_gsm.wav")])
            # GSM 6.10 stores whole 160-sample frames.
            with sf.SoundFile(os.path.join(source, f"{k}.gsm"), samplerate=8000, channels=1,
                              format="RAW", subtype="GSM610") as f:
                frames = f.frames
            assert frames == 160 * math.ceil(round((0.35 + 0.01 * k) * 8000) / 160)
        else:
            k = int(name[:-len(".wav")])
            frames = int(round((0.35 + 0.01 * k) * 8000))
        assert size == _expected_16k(frames, 8000)
        packages_of.setdefault(label, set()).add(package)
    # Allison's 15 clips are drawn from her en and es prompts together.
    assert packages_of["Allison"] == {"asterisk-core-sounds-en-wav", "asterisk-core-sounds-es-wav"}
    # The seed decides which 15 prompts are drawn; the same seed, the same draw.
    again = brs.build(str(out / "again"), packages_dir=str(top), seed=0, sets=["speakers"],
                      max_per_class=15)
    assert again["sets"]["speakers"]["classes"] == {voice: 15 for voice in VOICES}
    assert read_manifest(out / "again" / "speakers.tsv").paths == manifest.paths


def test_music_is_told_by_folder_except_in_the_dialog_packages():
    assert brs.is_music("wesnoth-1.16-music/wesnoth/1.16/data/core/music/x_ogg__seg000.wav")
    assert brs.is_music("warmux-data/warmux/music/ingame/track_ogg__seg003.wav")
    assert brs.is_music("fillets-ng-data/fillets-ng/music/rybky01_ogg__seg006.wav")
    assert not brs.is_music("warmux-data/warmux/sound/default/misc/frog_music_ogg.wav")
    assert not brs.is_music("fillets-ng-data-cs/fillets-ng/sound/music/cs/ves-m-dik_ogg.wav")
    assert not brs.is_music("music/file.wav")  # a package is never a folder of its own


def test_pool_excludes_speakers_and_splits_by_source(built):
    top, out, facts, summary = built
    train = read_manifest(out / "pool" / "train.tsv")
    valid = read_manifest(out / "pool" / "valid.tsv")
    assert train.root == valid.root == os.path.join(str(out), "audio", "pool")
    assert not set(train.paths) & set(valid.paths)
    every = train.paths + valid.paths
    assert len(valid) >= 16 and len(train) > 0
    assert not any("asterisk" in p for p in every)
    assert not any("copy" in p for p in every)  # the byte copy of a speaker prompt
    assert not any("/doc/" in p for p in every)
    # 80 ufoai clips - 1 short + 3 ui (labels do not matter here); the silent one dropped.
    assert sum(p.startswith("ufoai-sound/") for p in every) == 82
    # The Fillets line repeated in two levels is kept once.
    assert sorted(p for p in every if p.startswith("fillets-ng-data-cs/")) == [
        "fillets-ng-data-cs/fillets-ng/sound/cabin1/cs/k1-m-ahoj_ogg.wav",
        "fillets-ng-data-cs/fillets-ng/sound/city/cs/vit-v-proc_ogg.wav",
    ]
    # The 25 s track: 10 s + 10 s + 5 s segments, all in the same split.
    sizes = dict(zip(every, train.sizes + valid.sizes))
    segs = sorted(p for p in every if "theme_ogg__seg" in p)
    assert [sizes[p] for p in segs] == [160000, 160000, 80000]
    assert len({p in valid.paths for p in segs}) == 1
    assert summary["pool"]["clips"] == len(every)
    assert summary["pool"]["long_files_cut"] == 1
    assert summary["pool"]["clips_per_package"]["wesnoth-1.16-music"] == 3
    # pool_nomusic: the same split less the three music segments
    for split, full in (("train", train), ("valid", valid)):
        nomusic = read_manifest(out / "pool_nomusic" / f"{split}.tsv")
        assert nomusic.root == full.root
        assert nomusic.paths == [p for p in full.paths if "theme_ogg__seg" not in p]
        assert summary["pool"]["without_music"][f"{split}_clips"] == len(nomusic)
    assert len(every) - summary["pool"]["without_music"]["train_clips"] \
        - summary["pool"]["without_music"]["valid_clips"] == 3
    # Every listed file exists with its listed length.
    for rel in every[:20]:
        assert sf.info(os.path.join(train.root, rel)).frames == sizes[rel]


def test_summary_reports_versions_licences_and_small_sets(built):
    top, out, facts, summary = built
    assert summary["packages"]["ufoai-sound"]["version"] == "2.5-2"
    assert summary["packages"]["ufoai-sound"]["licences"] == ["GPL-2+"]
    assert summary["packages"]["minetest-data"]["version"] == "unknown"
    assert summary["packages"]["minetest-data"]["licences"] == ["no copyright file"]
    # The fake Fillets and Sonic Pi trees are too small for a set: no class kept, a warning.
    assert summary["sets"]["fillets_voices"]["clips"] == 0
    assert not (out / "fillets_voices.tsv").exists()
    assert any("sonicpi_families" in w for w in summary["warnings"])


def test_missing_package_names_it(tmp_path, built):
    top, out, facts, summary = built
    partial = tmp_path / "pkgs"
    shutil.copytree(top, partial, symlinks=True)
    shutil.rmtree(partial / "ufoai-sound")
    with pytest.raises(brs.BuildError, match="'ufoai-sound' not found.*dpkg-deb -x"):
        brs.build(str(tmp_path / "o"), packages_dir=str(partial), sets=["ufoai_categories"])
    assert brs.main([str(tmp_path / "o"), "--packages-dir", str(partial)]) == 2


def test_download_failure_and_cached_download(tmp_path, monkeypatch):
    """apt-get is replaced by a script: one that fails, then one that 'downloads' a .deb."""
    failing = tmp_path / "apt-fail"
    failing.write_text("#!/bin/sh\necho 'E: Unable to locate package '$2 >&2\nexit 100\n")
    failing.chmod(0o755)
    monkeypatch.setattr(brs, "APT_GET", str(failing))
    with pytest.raises(brs.BuildError) as err:
        brs.get_package("warmux-data", str(tmp_path / "cache"), None)
    message = str(err.value)
    assert "'warmux-data' is not available" in message and "apt-get update" in message
    assert "Unable to locate package warmux-data" in message

    if shutil.which("dpkg-deb") is None:
        pytest.skip("dpkg-deb is not installed")
    root = tmp_path / "debroot"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(
        "Package: warmux-data\nVersion: 1:11.04.1-4\nArchitecture: all\n"
        "Maintainer: nobody <n@example.org>\nDescription: fake\n")
    _write(str(root / "usr" / "share" / "games" / "warmux" / "a.wav"), _tone(0.5))
    debs = tmp_path / "debs"
    debs.mkdir()
    subprocess.run(["dpkg-deb", "--build", "--root-owner-group", str(root),
                    str(debs / "warmux-data_11.04.1-4_all.deb")], check=True, capture_output=True)
    fetching = tmp_path / "apt-ok"
    fetching.write_text(f"#!/bin/sh\ncp {debs}/$2_*.deb .\n")
    fetching.chmod(0o755)
    monkeypatch.setattr(brs, "APT_GET", str(fetching))
    cache = tmp_path / "cache"
    package = brs.get_package("warmux-data", str(cache), None)
    assert package.version == "1:11.04.1-4"
    assert package.tree == str(cache / "extracted" / "warmux-data")
    assert [s.rel for s in brs.find_sources(package)] == ["usr/share/games/warmux/a.wav"]
    # Cached: no download, no extraction the second time.
    monkeypatch.setattr(brs, "APT_GET", str(failing))
    stamp = os.path.getmtime(cache / "extracted" / "warmux-data" / ".extracted-from")
    assert brs.get_package("warmux-data", str(cache), None).version == "1:11.04.1-4"
    assert os.path.getmtime(cache / "extracted" / "warmux-data" / ".extracted-from") == stamp
