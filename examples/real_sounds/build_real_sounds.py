#!/usr/bin/env python3
"""Build a real-audio benchmark from Debian's sound packages.

    python examples/real_sounds/build_real_sounds.py OUT_DIR [--cache DIR]
        [--packages-dir DIR] [--seed 0] [--sets pool,speakers,...]

Steps (README.md beside this file has the details and the measured counts):

1. Each needed package is fetched with ``apt-get download`` into the cache (default
   ``OUT_DIR/debs``; a ``.deb`` already there is reused) and unpacked with
   ``dpkg-deb -x`` into ``<cache>/extracted/<package>`` (also reused).
   ``--packages-dir DIR`` skips both and reads ``DIR/<package>/`` trees instead.
2. The wav/ogg/flac files of each tree (and those inside ``.pk3``/``.zip`` archives,
   as ufoai-sound ships them, and headerless 8 kHz GSM ``.gsm`` Asterisk prompts) are decoded, mixed to mono, resampled to 16 kHz with
   the project's band-limited resampler and written as 16-bit wav under
   ``OUT_DIR/audio/<set>/<package>/...``. Silent clips (peak below -60 dBFS) and clips
   shorter than 0.3 s are dropped; byte-identical files are kept once.
3. Manifests in the format of ``uamix_fairseq.manifest`` (root line, then
   ``relative/path<TAB>num_samples``) and ``.label`` files (one class per clip line):
   ``OUT_DIR/pool/{train,valid}.tsv`` (unlabelled; files longer than 10 s are cut into
   consecutive 10 s segments; valid is ~5% of the source files, at least 16 clips,
   segments of one file never split between train and valid), the same split without
   the clips cut from music tracks in ``OUT_DIR/pool_nomusic/``, and
   ``OUT_DIR/<set>.tsv`` + ``OUT_DIR/<set>.label`` for each labelled few-shot set
   (whole clips, at most ``--max-per-class`` per class drawn with the seed, classes
   with fewer than ``--min-per-class`` clips dropped). The ``speakers`` set is held
   out of the pool entirely.
4. A JSON summary is printed and written to ``OUT_DIR/summary.json``.

Only numpy, soundfile and torch (through ``uamix_fairseq.audio.decode``) are needed; fairseq
is not imported.
"""

import argparse
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import soundfile as sf
import torch

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)

from uamix_fairseq.audio.decode import resample_waveform  # noqa: E402
from uamix_fairseq.labels import write_labels  # noqa: E402
from uamix_fairseq.manifest import read_manifest, write_manifest  # noqa: E402

SAMPLE_RATE = 16000
MIN_SECONDS = 0.3
# Peak below -60 dBFS counts as silence.
SILENCE_PEAK = 10.0 ** (-60.0 / 20.0)
SEGMENT_SECONDS = 10.0
VALID_FRACTION = 0.05
MIN_VALID_CLIPS = 16
DEFAULT_MAX_PER_CLASS = 60
DEFAULT_MIN_PER_CLASS = 15
# A set with fewer classes than this is still written, with a warning.
WANTED_CLASSES = 5
# .gsm: headerless GSM 6.10 at 8 kHz (Asterisk prompts), read as RAW by libsndfile.
AUDIO_EXTENSIONS = (".wav", ".ogg", ".flac", ".gsm")
ARCHIVE_EXTENSIONS = (".pk3", ".zip")
# Commands, module-level so that a test can point them at stand-ins.
APT_GET = "apt-get"
DPKG_DEB = "dpkg-deb"

# ---------------------------------------------------------------------------
# what is built from which package
# ---------------------------------------------------------------------------

# Asterisk telephone prompts. Each package holds one folder
# usr/share/asterisk/sounds/<lang>_<COUNTRY>_<f|m>_<Voice>/; the class is the voice,
# not the language: the en and es prompts are both Allison Smith's voice, so they
# form one (bilingual) class.
SPEAKER_PACKAGES = (
    "asterisk-core-sounds-en-wav",  # en_US_f_Allison
    "asterisk-core-sounds-es-wav",  # es_MX_f_Allison
    "asterisk-core-sounds-fr-wav",  # fr_CA_f_June
    "asterisk-core-sounds-it-wav",  # it_IT_m_Carlo
    "asterisk-core-sounds-ru-wav",  # ru_RU_f_IvrvoiceRU
    "asterisk-prompt-it-menardi-wav",  # it_IT_f_Menardi
    "asterisk-prompt-fr-armelle",  # sounds/fr/*.gsm, voice of Armelle Desjardins
)
# Packages whose folders do not name the voice.
SPEAKER_PACKAGE_VOICES = {"asterisk-prompt-fr-armelle": "Armelle"}
_VOICE_FOLDER = re.compile(r"^[a-z]{2}_[A-Z]{2}_[fm]_([A-Za-z0-9]+)$")
# Fish Fillets NG spoken dialogs: one package per dubbing language.
FILLETS_VOICE_PACKAGES = {"cs": "fillets-ng-data-cs", "nl": "fillets-ng-data-nl"}
# The two fish are voiced by one actor per language in every level; other
# characters' codes are reused by unrelated characters in other levels, so they
# are labelled per level.
FILLETS_MAIN_CHARACTERS = {"m", "v"}
# Sonic Pi sample families (the prefix before the first "_") merged into groups
# large enough for 5 support + 10 query clips.
SONICPI_GROUPS = {
    "bd": "drum", "sn": "drum", "drum": "drum",
    "elec": "elec",
    "loop": "loop",
    "tabla": "tabla",
    "ambi": "tonal", "bass": "tonal", "guit": "tonal",
    "glitch": "fx", "mehackit": "fx", "misc": "fx", "perc": "fx", "vinyl": "fx",
}
# Unlabelled pool: package -> at most this many source files (None: all of them).
POOL_PACKAGES = {
    "sonic-pi-samples": None,
    "ufoai-sound": None,
    "minetest-data": None,
    "wesnoth-1.16-music": None,
    "wesnoth-1.16-data": None,
    "warmux-data": None,
    "lincity-ng-data": None,
    "fillets-ng-data": None,
    # Thousands of short dialog lines; a sample keeps speech from swamping the pool.
    "fillets-ng-data-cs": 300,
    "fillets-ng-data-nl": 300,
}


class BuildError(RuntimeError):
    """The benchmark cannot be built; the message says what to do."""


@dataclass(frozen=True)
class Source:
    """One audio file of a package tree (``member`` set: a file inside an archive)."""

    package: str
    rel: str  # path inside the package tree; archive members as "<archive>/<member>"
    path: str  # the file on disk (the archive for members)
    member: Optional[str] = None

    def read_bytes(self) -> bytes:
        if self.member is None:
            with open(self.path, "rb") as handle:
                return handle.read()
        with zipfile.ZipFile(self.path) as archive:
            return archive.read(self.member)


def _stem_parts(rel: str) -> Tuple[str, List[str]]:
    name = os.path.splitext(os.path.basename(rel))[0]
    return name, rel.split("/")


def label_speaker(source: Source) -> Optional[str]:
    """``.../sounds/<lang>_<COUNTRY>_<sex>_<Voice>/...`` -> ``<Voice>`` (or the voice
    of the package in SPEAKER_PACKAGE_VOICES)."""
    for part in source.rel.split("/")[:-1]:
        match = _VOICE_FOLDER.match(part)
        if match:
            return match.group(1)
    return SPEAKER_PACKAGE_VOICES.get(source.package)


def label_fillets(language: str) -> Callable[[Source], Optional[str]]:
    """``<level>-<character>-<line>.ogg`` -> ``<lang>_<character>`` (main fish) or
    ``<lang>_<level folder>_<character>``; effects (``x``) and unnamed files -> None."""

    def label(source: Source) -> Optional[str]:
        name, parts = _stem_parts(source.rel)
        fields = name.split("-")
        if len(fields) < 3 or "sound" not in parts:
            return None
        character = fields[1].lower()
        if not character.isalpha() or character == "x":
            return None
        if character in FILLETS_MAIN_CHARACTERS:
            return f"{language}_{character}"
        level = parts[parts.index("sound") + 1] if parts.index("sound") + 1 < len(parts) - 1 else "misc"
        return f"{language}_{level}_{character}"

    return label


def label_sonicpi(source: Source) -> Optional[str]:
    name, parts = _stem_parts(source.rel)
    if "samples" not in parts[:-1]:
        return None
    return SONICPI_GROUPS.get(name.split("_")[0].lower())


def label_ufoai(source: Source) -> Optional[str]:
    """Archive member ``sound/<category>/...`` -> ``<category>``."""
    if source.member is None:
        return None
    parts = source.member.split("/")
    if len(parts) >= 3 and parts[0] == "sound":
        return parts[1]
    return None


# set name -> (package -> labeller); every labelled set is also described in README.md.
LABELLED_SETS: Dict[str, Dict[str, Callable[[Source], Optional[str]]]] = {
    "speakers": {pkg: label_speaker for pkg in SPEAKER_PACKAGES},
    "fillets_voices": {pkg: label_fillets(lang) for lang, pkg in FILLETS_VOICE_PACKAGES.items()},
    "sonicpi_families": {"sonic-pi-samples": label_sonicpi},
    "ufoai_categories": {"ufoai-sound": label_ufoai},
}
# Sets kept out of the unlabelled pool (an unseen domain for the tuned encoder).
HELD_OUT_SETS = ("speakers",)
ALL_SETS = ("pool",) + tuple(LABELLED_SETS)


# ---------------------------------------------------------------------------
# packages: download, extract, version, licence
# ---------------------------------------------------------------------------


def _run(cmd: Sequence[str], cwd: Optional[str] = None) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd), cwd=cwd, capture_output=True, text=True)


def _find_deb(cache: str, package: str) -> Optional[str]:
    if not os.path.isdir(cache):
        return None
    found = sorted(f for f in os.listdir(cache) if f.startswith(package + "_") and f.endswith(".deb"))
    return os.path.join(cache, found[-1]) if found else None


def _missing_package_message(package: str, detail: str) -> str:
    return (
        f"Debian package {package!r} is not available: {detail}. Run `apt-get update` "
        f"(as root) and check `apt-cache policy {package}`; if this archive does not "
        "have it, build on a Debian/Ubuntu machine whose archive does (these names are "
        "from Debian 12 bookworm), or extract it yourself (dpkg-deb -x) into a "
        f"folder DIR/{package} and pass --packages-dir DIR"
    )


def download_package(package: str, cache: str) -> str:
    """The cached ``.deb`` of ``package``, fetched with ``apt-get download`` if needed."""
    deb = _find_deb(cache, package)
    if deb:
        return deb
    os.makedirs(cache, exist_ok=True)
    try:
        result = _run([APT_GET, "download", package], cwd=cache)
    except FileNotFoundError:
        raise BuildError(_missing_package_message(
            package, f"`{APT_GET}` is not installed here")) from None
    deb = _find_deb(cache, package)
    if result.returncode != 0 or deb is None:
        output = (result.stderr or result.stdout or "").strip().splitlines()
        detail = f"`{APT_GET} download {package}` failed" + (f" ({output[-1]})" if output else "")
        raise BuildError(_missing_package_message(package, detail))
    return deb


def extract_package(deb: str, package: str, cache: str) -> str:
    """Unpack ``deb`` into ``<cache>/extracted/<package>`` once; returns that folder."""
    target = os.path.join(cache, "extracted", package)
    marker = os.path.join(target, ".extracted-from")
    if os.path.isfile(marker):
        with open(marker, encoding="utf-8") as handle:
            if handle.read().strip() == os.path.basename(deb):
                return target
    partial = target + ".partial"
    shutil.rmtree(partial, ignore_errors=True)
    os.makedirs(partial)
    try:
        result = _run([DPKG_DEB, "-x", deb, partial])
    except FileNotFoundError:
        raise BuildError(f"`{DPKG_DEB}` is not installed, so {deb} cannot be unpacked; "
                         "install dpkg or pass --packages-dir with extracted trees") from None
    if result.returncode != 0:
        raise BuildError(f"`{DPKG_DEB} -x {deb}` failed: {result.stderr.strip()}; delete "
                         "the .deb so that it is downloaded again")
    with open(os.path.join(partial, ".extracted-from"), "w", encoding="utf-8") as handle:
        handle.write(os.path.basename(deb) + "\n")
    shutil.rmtree(target, ignore_errors=True)
    os.replace(partial, target)
    return target


def deb_version(deb: str) -> str:
    try:
        result = _run([DPKG_DEB, "-f", deb, "Version"])
        if result.returncode == 0 and result.stdout.strip():
            return result.stdout.strip()
    except FileNotFoundError:
        pass
    return "unknown"


def tree_version(tree: str, package: str) -> str:
    """Version from ``usr/share/doc/<package>/changelog.Debian.gz``'s first line."""
    doc = os.path.join(tree, "usr", "share", "doc", package)
    for name in ("changelog.Debian.gz", "changelog.gz"):
        path = os.path.join(doc, name)
        if os.path.isfile(path):
            try:
                with gzip.open(path, "rt", encoding="utf-8", errors="replace") as handle:
                    match = re.match(r"\S+ \(([^)]+)\)", handle.readline())
                if match:
                    return match.group(1)
            except OSError:
                pass
    return "unknown"


def read_licences(tree: str, package: str) -> List[str]:
    """Licence names of ``usr/share/doc/<package>/copyright`` (DEP-5 ``License:`` lines;
    a free-form file is reported by the licence it names)."""
    path = os.path.join(tree, "usr", "share", "doc", package, "copyright")
    if not os.path.isfile(path):
        return ["no copyright file"]
    with open(path, encoding="utf-8", errors="replace") as handle:
        text = handle.read()
    names = Counter(m.group(1).strip() for m in re.finditer(r"^License:[ \t]*(\S.*)$", text, re.M))
    if names:
        return [name for name, _ in names.most_common()]
    # A free-form file: name each licence family it mentions (the packaging's own
    # licence may be among them; README.md says which one covers the audio).
    flat = " ".join(text.split())
    found = []
    if "GNU General Public License" in flat:
        if re.search(r"version 2 of the License, or \(at your option\) any later"
                     r"|version 2 or at your option any later", flat):
            found.append("GPL-2+")
        elif "version 2" in flat:
            found.append("GPL-2")
        else:
            found.append("GPL")
    if "Redistribution and use" in flat:
        found.append("BSD-style")
    if not found:
        return ["unrecognised (read the copyright file)"]
    return [f"{name} (free-form copyright file)" for name in found]


@dataclass
class Package:
    name: str
    tree: str
    version: str
    licences: List[str]


def get_package(name: str, cache: str, packages_dir: Optional[str]) -> Package:
    if packages_dir is not None:
        tree = os.path.join(packages_dir, name)
        if not os.path.isdir(tree):
            raise BuildError(
                f"package {name!r} not found: {tree} does not exist; extract it there "
                f"(apt-get download {name} && dpkg-deb -x {name}_*.deb {tree}) or leave "
                "out --packages-dir to download it"
            )
        version = tree_version(tree, name)
    else:
        deb = download_package(name, cache)
        tree = extract_package(deb, name, cache)
        version = deb_version(deb)
    return Package(name, tree, version, read_licences(tree, name))


# ---------------------------------------------------------------------------
# finding and decoding audio
# ---------------------------------------------------------------------------


def find_sources(package: Package) -> List[Source]:
    """Audio files of a package tree (documentation folders skipped), sorted."""
    found = []
    for folder, dirs, files in os.walk(package.tree):
        rel_folder = os.path.relpath(folder, package.tree).replace(os.sep, "/")
        if rel_folder.startswith("usr/share/doc"):
            dirs[:] = []
            continue
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(folder, name)
            # Links are skipped: in a package they alias files that are there too
            # (asterisk-prompt-fr-armelle), and absolute ones point out of the tree.
            if os.path.islink(path) or not os.path.isfile(path):
                continue
            rel = name if rel_folder == "." else f"{rel_folder}/{name}"
            lower = name.lower()
            if lower.endswith(AUDIO_EXTENSIONS):
                found.append(Source(package.name, rel, path))
            elif lower.endswith(ARCHIVE_EXTENSIONS):
                try:
                    with zipfile.ZipFile(path) as archive:
                        members = sorted(m for m in archive.namelist()
                                         if m.lower().endswith(AUDIO_EXTENSIONS))
                except zipfile.BadZipFile:
                    continue
                found.extend(Source(package.name, f"{rel}/{m}", path, m) for m in members)
    return sorted(found, key=lambda s: s.rel)


def decode(data: bytes, name: str = "") -> Tuple[Optional[np.ndarray], str]:
    """``(16 kHz mono float32 waveform, "")``, or ``(None, reason)`` for a dropped file
    (``name``: the file name, whose extension tells headerless GSM apart)."""
    raw = {}
    if name.lower().endswith(".gsm"):
        raw = dict(format="RAW", subtype="GSM610", samplerate=8000, channels=1)
    try:
        samples, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True, **raw)
    except (sf.SoundFileError, RuntimeError, ValueError) as err:
        return None, f"unreadable ({str(err).strip() or type(err).__name__})"
    if samples.size == 0:
        return None, "short"
    mono = samples.mean(axis=1, dtype=np.float32)
    if not np.isfinite(mono).all():
        return None, "unreadable (NaN/Inf samples)"
    if rate != SAMPLE_RATE:
        try:
            mono = resample_waveform(torch.from_numpy(np.ascontiguousarray(mono)), int(rate),
                                     SAMPLE_RATE).numpy()
        except ValueError as err:
            return None, f"unreadable ({err})"
    return check_clip(mono)


def check_clip(wave: np.ndarray) -> Tuple[Optional[np.ndarray], str]:
    if wave.shape[0] < int(round(MIN_SECONDS * SAMPLE_RATE)):
        return None, "short"
    if float(np.abs(wave).max()) < SILENCE_PEAK:
        return None, "silent"
    return wave, ""


def segments(wave: np.ndarray) -> List[np.ndarray]:
    """A clip longer than 10 s as consecutive 10 s pieces (a valid tail kept)."""
    step = int(SEGMENT_SECONDS * SAMPLE_RATE)
    if wave.shape[0] <= step:
        return [wave]
    pieces = []
    for start in range(0, wave.shape[0], step):
        piece, _ = check_clip(wave[start:start + step])
        if piece is not None:
            pieces.append(piece)
    return pieces


def write_wav(path: str, wave: np.ndarray) -> int:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    sf.write(path, np.clip(wave, -1.0, 1.0), SAMPLE_RATE, subtype="PCM_16")
    return int(wave.shape[0])


def output_name(source: Source) -> str:
    """``<package>/<path without usr/share and extension>`` for the written wav files."""
    rel = source.rel
    for prefix in ("usr/share/games/", "usr/share/"):
        if rel.startswith(prefix):
            rel = rel[len(prefix):]
            break
    base, ext = os.path.splitext(rel)
    if ext.lower() != ".wav":
        base += "_" + ext.lstrip(".").lower()
    return f"{source.package}/{base}"


def _hours(sizes: Sequence[int]) -> float:
    return round(sum(sizes) / SAMPLE_RATE / 3600.0, 4)


# ---------------------------------------------------------------------------
# building the sets
# ---------------------------------------------------------------------------


def build_labelled_set(name: str, labellers, out_dir: str,
                       seed: int, max_per_class: int, min_per_class: int,
                       sources_of: Dict[str, List[Source]]) -> Tuple[dict, set]:
    """Write ``<set>.tsv``/``.label`` and the audio; returns (summary, file hashes used)."""
    audio_root = os.path.join(out_dir, "audio", name)
    shutil.rmtree(audio_root, ignore_errors=True)
    candidates: Dict[str, List[Tuple[Source, bytes]]] = defaultdict(list)
    seen = set()
    duplicates = 0
    for package_name, labeller in labellers.items():
        for source in sources_of[package_name]:
            label = labeller(source)
            if label is None:
                continue
            data = source.read_bytes()
            digest = hashlib.sha1(data).hexdigest()
            if digest in seen:
                duplicates += 1
                continue
            seen.add(digest)
            candidates[label].append((source, digest))

    set_index = sorted(LABELLED_SETS).index(name) if name in LABELLED_SETS else 0
    rng = np.random.default_rng([seed, set_index])
    dropped = Counter()
    kept: Dict[str, List[Tuple[str, int, str]]] = {}
    for label in sorted(candidates):
        items = candidates[label]
        order = rng.permutation(len(items))
        rows = []
        for index in order:
            if len(rows) >= max_per_class:
                break
            source, digest = items[index]
            wave, reason = decode(source.read_bytes(), source.rel)
            if wave is None:
                dropped[reason.split(" ")[0]] += 1
                continue
            rel = output_name(source) + ".wav"
            rows.append((rel, write_wav(os.path.join(audio_root, rel), wave), digest))
        kept[label] = rows

    classes, small = {}, {}
    entries, labels, used = [], [], set()
    for label, rows in kept.items():
        if len(rows) < min_per_class:
            small[label] = len(rows)
            for rel, _, _ in rows:
                os.remove(os.path.join(audio_root, rel))
            continue
        classes[label] = len(rows)
        for rel, size, digest in rows:
            entries.append((rel, size))
            labels.append([label])
            used.add(digest)
    order = sorted(range(len(entries)), key=lambda i: entries[i][0])
    entries = [entries[i] for i in order]
    labels = [labels[i] for i in order]

    summary = {
        "clips": len(entries),
        "classes": classes,
        "num_classes": len(classes),
        "dropped_classes": small,
        "hours": _hours([s for _, s in entries]),
        "packages": sorted(labellers),
        "in_pool": name not in HELD_OUT_SETS,
        "dropped_files": dict(sorted(dropped.items())),
        "duplicate_files": duplicates,
        "warnings": [],
    }
    if not entries:
        summary["warnings"].append(f"{name}: no class kept {min_per_class} clips; nothing written")
        return summary, used
    if len(classes) < WANTED_CLASSES:
        summary["warnings"].append(
            f"{name}: only {len(classes)} classes with >= {min_per_class} clips "
            f"(wanted {WANTED_CLASSES})")
    manifest = os.path.join(out_dir, f"{name}.tsv")
    write_manifest(manifest, os.path.abspath(audio_root), entries)
    write_labels(os.path.join(out_dir, f"{name}.label"), labels)
    summary["manifest"] = manifest
    summary["labels"] = os.path.join(out_dir, f"{name}.label")
    return summary, used


def build_pool(out_dir: str, seed: int,
               sources_of: Dict[str, List[Source]], excluded_hashes: set) -> dict:
    """Write the unlabelled ``pool/train.tsv`` and ``pool/valid.tsv``."""
    audio_root = os.path.join(out_dir, "audio", "pool")
    shutil.rmtree(audio_root, ignore_errors=True)
    seen = set(excluded_hashes)
    dropped = Counter()
    groups: List[List[Tuple[str, int]]] = []  # the clips of one source file
    per_package = {}
    long_files = 0
    for index, (package_name, cap) in enumerate(POOL_PACKAGES.items()):
        # Duplicates first, in path order, so that the first copy is the one kept.
        unique = []
        for source in sources_of[package_name]:
            digest = hashlib.sha1(source.read_bytes()).hexdigest()
            if digest in seen:
                dropped["duplicate"] += 1
                continue
            seen.add(digest)
            unique.append(source)
        if cap is not None:
            order = np.random.default_rng([seed, 1000 + index]).permutation(len(unique))
            unique = [unique[i] for i in order]
        taken = clips = 0
        for source in unique:
            if cap is not None and taken >= cap:
                break
            wave, reason = decode(source.read_bytes(), source.rel)
            if wave is None:
                dropped[reason.split(" ")[0]] += 1
                continue
            pieces = segments(wave)
            if not pieces:
                dropped["silent"] += 1
                continue
            base = output_name(source)
            if len(pieces) == 1 and pieces[0] is wave:
                names = [base + ".wav"]
            else:
                long_files += 1
                names = [f"{base}__seg{k:03d}.wav" for k in range(len(pieces))]
            group = [(n, write_wav(os.path.join(audio_root, n), p)) for n, p in zip(names, pieces)]
            groups.append(group)
            taken += 1
            clips += len(group)
        per_package[package_name] = clips
    if not groups:
        raise BuildError("the unlabelled pool is empty: no readable, non-silent audio "
                         f"in {', '.join(POOL_PACKAGES)}")

    summary = write_grouped_split(out_dir, "pool", audio_root, groups, seed)
    summary["without_music"] = write_without_music(out_dir, audio_root)
    summary.update({
        "long_files_cut": long_files,
        "clips_per_package": per_package,
        "dropped_files": dict(sorted(dropped.items())),
        "excludes": list(HELD_OUT_SETS),
    })
    return summary


# Dialog packages: their level named "music" holds spoken lines, not music.
DIALOG_PACKAGES = ("fillets-ng-data-cs", "fillets-ng-data-nl")


def is_music(path: str) -> bool:
    """A pool clip (``package/...`` path) from a game's music: a file under a ``music``
    folder (all of wesnoth-1.16-music, and the music of warmux, lincity-ng and
    fillets-ng), outside the dialog packages."""
    parts = path.split("/")
    return parts[0] not in DIALOG_PACKAGES and "music" in parts[1:-1]


def write_without_music(out_dir: str, audio_root: str) -> dict:
    """Write ``pool_nomusic/{train,valid}.tsv``: the pool's split without its music.

    Music tracks are long, so the pool holds many 10 s segments of each (a third of its
    clips); tuning on the pool without them is measured in the README."""
    counts = {}
    for split in ("train", "valid"):
        clips = read_manifest(os.path.join(out_dir, "pool", f"{split}.tsv"))
        kept = [(p, n) for p, n in zip(clips.paths, clips.sizes) if not is_music(p)]
        write_manifest(os.path.join(out_dir, "pool_nomusic", f"{split}.tsv"),
                       os.path.abspath(audio_root), kept)
        counts[f"{split}_clips"] = len(kept)
        counts[f"{split}_hours"] = _hours([n for _, n in kept])
    return counts


def write_grouped_split(out_dir: str, name: str, audio_root: str,
                        groups: List[List[Tuple[str, int]]], seed: int) -> dict:
    """Write ``<out_dir>/<name>/{train,valid}.tsv`` from ``groups`` (the clips of one
    source file, as ``(path under audio_root, samples)``): valid is about
    ``VALID_FRACTION`` of the clips, at least ``MIN_VALID_CLIPS``, and the clips of one
    source file never straddle the two."""
    total = sum(len(g) for g in groups)
    wanted = min(max(MIN_VALID_CLIPS, int(round(VALID_FRACTION * total))), total - 1)
    order = np.random.default_rng([seed, 2000]).permutation(len(groups))
    valid, train, count = [], [], 0
    for i in order:
        if count < wanted:
            valid.extend(groups[i])
            count += len(groups[i])
        else:
            train.extend(groups[i])
    if not train:
        raise BuildError(f"the {name} set is too small to keep a train split beside a "
                         f"valid split of {MIN_VALID_CLIPS} clips")
    train.sort()
    valid.sort()
    root = os.path.abspath(audio_root)
    write_manifest(os.path.join(out_dir, name, "train.tsv"), root, train)
    write_manifest(os.path.join(out_dir, name, "valid.tsv"), root, valid)
    return {
        "train_clips": len(train),
        "valid_clips": len(valid),
        "clips": len(train) + len(valid),
        "hours": _hours([s for _, s in train + valid]),
        "train_hours": _hours([s for _, s in train]),
        "valid_hours": _hours([s for _, s in valid]),
        "source_files": len(groups),
        "train_manifest": os.path.join(out_dir, name, "train.tsv"),
        "valid_manifest": os.path.join(out_dir, name, "valid.tsv"),
    }


def needed_packages(sets: Sequence[str]) -> List[str]:
    names = []
    for name in sets:
        names.extend(POOL_PACKAGES if name == "pool" else LABELLED_SETS[name])
    return list(dict.fromkeys(names))


def build(out_dir: str, cache: Optional[str] = None, packages_dir: Optional[str] = None,
          seed: int = 0, sets: Sequence[str] = ALL_SETS,
          max_per_class: int = DEFAULT_MAX_PER_CLASS,
          min_per_class: int = DEFAULT_MIN_PER_CLASS) -> dict:
    start = time.time()
    unknown = [s for s in sets if s not in ALL_SETS]
    if unknown:
        raise BuildError(f"unknown set(s) {', '.join(unknown)}; choose from {', '.join(ALL_SETS)}")
    out_dir = os.path.abspath(out_dir)
    cache = os.path.abspath(cache or os.path.join(out_dir, "debs"))
    os.makedirs(out_dir, exist_ok=True)

    packages = {name: get_package(name, cache, packages_dir) for name in needed_packages(sets)}
    sources_of = {name: find_sources(pkg) for name, pkg in packages.items()}

    summary = {
        "out_dir": out_dir,
        "sample_rate": SAMPLE_RATE,
        "seed": seed,
        "max_per_class": max_per_class,
        "min_per_class": min_per_class,
        "soundfile": {"version": sf.__version__, "libsndfile": sf.__libsndfile_version__,
                      "extensions_read": [e.lstrip(".") for e in AUDIO_EXTENSIONS]},
        "packages": {name: {"version": pkg.version, "licences": pkg.licences,
                            "audio_files": len(sources_of[name])}
                     for name, pkg in packages.items()},
        "sets": {},
        "warnings": [],
    }
    held_out_hashes = set()
    for name in LABELLED_SETS:
        if name not in sets:
            continue
        result, used = build_labelled_set(name, LABELLED_SETS[name], out_dir, seed,
                                          max_per_class, min_per_class, sources_of)
        summary["sets"][name] = result
        summary["warnings"].extend(result.pop("warnings"))
        if name in HELD_OUT_SETS:
            held_out_hashes |= used
            # Hold out the whole domain, not only the sampled clips.
            for package_name in LABELLED_SETS[name]:
                held_out_hashes |= {hashlib.sha1(s.read_bytes()).hexdigest()
                                    for s in sources_of[package_name]}
    if "pool" in sets:
        summary["pool"] = build_pool(out_dir, seed, sources_of, held_out_hashes)
    summary["build_seconds"] = round(time.time() - start, 1)
    with open(os.path.join(out_dir, "summary.json"), "w", encoding="utf-8") as handle:
        json.dump(summary, handle, indent=2)
        handle.write("\n")
    return summary


def package_arguments(description: str) -> argparse.ArgumentParser:
    """A parser with the arguments every builder here shares: OUT_DIR, --cache and
    --packages-dir."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("out_dir", metavar="OUT_DIR", help="where the audio, manifests and summary go")
    parser.add_argument("--cache", default=None,
                        help="folder for the downloaded .deb files and their extracted trees "
                             "(default: OUT_DIR/debs)")
    parser.add_argument("--packages-dir", default=None,
                        help="read already-extracted package trees DIR/<package>/ instead of "
                             "downloading")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = package_arguments(__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the per-class samples and the pool's valid split (default: 0)")
    parser.add_argument("--sets", default=",".join(ALL_SETS),
                        help=f"comma-separated sets to build (default: {','.join(ALL_SETS)})")
    parser.add_argument("--max-per-class", type=int, default=DEFAULT_MAX_PER_CLASS,
                        help=f"clips drawn per class of a labelled set (default: {DEFAULT_MAX_PER_CLASS})")
    parser.add_argument("--min-per-class", type=int, default=DEFAULT_MIN_PER_CLASS,
                        help="classes with fewer clips are dropped (default: "
                             f"{DEFAULT_MIN_PER_CLASS} = 5 support + 10 query)")
    args = parser.parse_args(argv)
    sets = [s.strip() for s in args.sets.split(",") if s.strip()]
    try:
        summary = build(args.out_dir, args.cache, args.packages_dir, args.seed, sets,
                        args.max_per_class, args.min_per_class)
    except BuildError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2))
    for warning in summary["warnings"]:
        print(f"warning: {warning}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
