"""fairseq audio manifests: read, write, and make them from a folder of audio.

Format (as fairseq's ``FileAudioDataset`` reads it): the first line is the root
directory; every further line is ``relative/path<TAB>num_samples`` for one clip,
where ``num_samples`` is the frame count at the file's own sample rate.

Command line::

    python -m uamix_fairseq.manifest AUDIO_DIR --dest DIR --valid-percent 0.01
"""

import argparse
import hashlib
import json
import logging
import os
import sys
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import soundfile as sf

__all__ = [
    "Manifest",
    "ManifestError",
    "main",
    "make_manifests",
    "read_manifest",
    "write_manifest",
]

logger = logging.getLogger(__name__)

# The rate the AudioMAE features are computed at; other rates get a warning.
EXPECTED_SAMPLE_RATE = 16000
# The fewest clips a valid split (written here, accepted by the tasks) or a training
# batch may hold: a single clip has no negatives (loss 0 / accuracy 100) and the head's
# BatchNorm cannot normalise it.
MIN_CLIPS = 2
# How many skipped files are named in the log and the summary.
MAX_REPORTED_SKIPS = 10


class ManifestError(ValueError):
    """A manifest (or the folder it is made from) cannot be used."""


@dataclass
class Manifest:
    """One parsed manifest: ``paths[i]`` (relative to ``root``) has ``sizes[i]`` samples."""

    root: str
    paths: List[str] = field(default_factory=list)
    sizes: List[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.paths)

    def full_path(self, i: int) -> str:
        """Path of clip ``i``: the root joined with its relative path."""
        return os.path.join(self.root, self.paths[i])

    def clip_list_id(self) -> int:
        """A number in [1, 2**52) that names this list of clips (their relative paths,
        in order), so that clip indices saved with a model can be checked against the
        manifest they refer to; the root is left out, so moving the data keeps it."""
        digest = hashlib.sha1("\n".join(self.paths).encode("utf-8")).hexdigest()
        return int(digest[:13], 16) or 1


# ---------------------------------------------------------------------------
# reading and writing
# ---------------------------------------------------------------------------


def _parse_clip_line(line: str, where: str) -> Tuple[str, int]:
    """Split one ``path<TAB>size`` line; ``where`` is "FILE line N" for errors."""
    if not line:
        raise ManifestError(
            f"{where}: blank line between clip lines; remove it (only trailing "
            "blank lines are allowed)"
        )
    fields = line.split("\t")
    if len(fields) != 2:
        raise ManifestError(
            f"{where}: expected 2 tab-separated fields (relative/path<TAB>num_samples), "
            f"found {len(fields)} in {line!r}; fix the line or re-create the manifest "
            "with `python -m uamix_fairseq.manifest`"
        )
    rel_path, size_text = fields
    if not rel_path:
        raise ManifestError(f"{where}: the path field is empty; fix or remove the line")
    try:
        size = int(size_text)
    except ValueError:
        raise ManifestError(
            f"{where}: the size {size_text!r} is not an integer number of samples; "
            "fix the line or re-create the manifest"
        ) from None
    if size <= 0:
        raise ManifestError(
            f"{where}: the size {size} is not positive; remove the empty clip "
            "or re-create the manifest"
        )
    return rel_path, size


def read_manifest(path) -> Manifest:
    """Parse and check a manifest file.

    Blank lines at the end are ignored; everything else must be well formed.

    Raises:
        ManifestError: naming the manifest and the 1-based line number, for a
            missing or empty file, a root directory that does not exist, no clip
            lines, a malformed line, or a non-integer / non-positive size.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ManifestError(
            f"manifest {path} does not exist; create it with "
            "`python -m uamix_fairseq.manifest AUDIO_DIR --dest DIR` or fix task.data"
        )
    with open(path, encoding="utf-8") as handle:
        lines = handle.read().splitlines()
    # Trailing blank lines are harmless (editors add them); drop them first.
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise ManifestError(
            f"manifest {path} line 1: the file is empty; its first line must be "
            "the audio root directory, followed by one clip per line"
        )
    root = lines[0].strip()
    if not root or not os.path.isdir(root):
        raise ManifestError(
            f"manifest {path} line 1: root directory {root!r} does not exist; "
            "fix the first line (relative roots count from the current directory) "
            "or re-create the manifest where the audio is"
        )
    if len(lines) == 1:
        raise ManifestError(
            f"manifest {path} line 2: no clip lines after the root; add "
            "`relative/path<TAB>num_samples` lines or re-create the manifest"
        )
    manifest = Manifest(root=root)
    for number, line in enumerate(lines[1:], start=2):
        # Strip stray spaces only: a tab at either end is a (wrong) field separator.
        rel_path, size = _parse_clip_line(line.strip(" "), f"manifest {path} line {number}")
        manifest.paths.append(rel_path)
        manifest.sizes.append(size)
    return manifest


def write_manifest(path, root, entries: Iterable[Tuple[str, int]]) -> int:
    """Write a manifest: ``root`` on the first line, then ``rel_path<TAB>size`` lines.

    Args:
        path: the manifest file to (over)write; its folder is created.
        root: the directory the relative paths start from.
        entries: ``(relative_path, num_samples)`` pairs, written in order.

    Returns:
        The number of clip lines written.
    """
    path, root = os.fspath(path), os.fspath(root)
    lines = [root]
    for rel_path, size in entries:
        # A tab or newline in a name would silently corrupt the format.
        if any(ch in rel_path for ch in "\t\r\n") or not rel_path:
            raise ManifestError(
                f"manifest {path}: cannot write path {rel_path!r} (empty, or has a "
                "tab or newline); rename the file"
            )
        if int(size) != size or size <= 0:
            raise ManifestError(
                f"manifest {path}: size {size!r} of {rel_path!r} is not a positive "
                "integer; drop empty clips before writing"
            )
        lines.append(f"{rel_path}\t{int(size)}")
    folder = os.path.dirname(path)
    if folder:
        os.makedirs(folder, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    return len(lines) - 1


# ---------------------------------------------------------------------------
# making manifests from a folder
# ---------------------------------------------------------------------------


def _find_audio(top: str, exts: Tuple[str, ...], must_contain: Optional[str]) -> List[str]:
    """Paths relative to ``top`` of the files with one of ``exts``, sorted.

    Symlinked folders are followed, each real folder once (no loops). Sorting the
    relative paths as strings makes the order independent of the file system.
    """
    found = []
    seen = set()
    for folder, dirs, files in os.walk(top, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:  # a symlink loop or a folder linked twice
            dirs[:] = []
            continue
        seen.add(real)
        for name in files:
            rel_path = os.path.relpath(os.path.join(folder, name), top)
            if not name.lower().endswith(exts):
                continue
            if must_contain and must_contain not in rel_path:
                continue
            found.append(rel_path)
    return sorted(found)


def _probe(full_path: str) -> Tuple[Optional[Tuple[int, int]], str]:
    """``((frames, sample_rate), "")`` from the header, or ``(None, reason)``."""
    try:
        info = sf.info(full_path)
    except (sf.SoundFileError, RuntimeError) as err:
        return None, str(err).strip() or type(err).__name__
    if info.frames <= 0:
        return None, "no audio frames"
    return (int(info.frames), int(info.samplerate)), ""


def valid_count(num_files: int, valid_percent: float) -> int:
    """How many clips the valid split gets: ``round(valid_percent * num_files)``, but at
    least ``MIN_CLIPS`` (one clip scores loss 0 / accuracy 100) and never so many
    that train keeps fewer than ``MIN_CLIPS``; 0 when that cannot be met."""
    if valid_percent <= 0 or num_files < 2 * MIN_CLIPS:
        return 0
    wanted = max(MIN_CLIPS, int(round(valid_percent * num_files)))
    return min(wanted, num_files - MIN_CLIPS)


def _pick_valid(num_files: int, valid_percent: float, seed: int) -> np.ndarray:
    """Boolean mask of the clips drawn for the valid split (``valid_count`` of them)."""
    mask = np.zeros(num_files, dtype=bool)
    count = valid_count(num_files, valid_percent)
    if count == 0:
        return mask
    chosen = np.random.default_rng(seed).choice(num_files, size=count, replace=False)
    mask[chosen] = True
    return mask


def _normalise_extensions(extensions) -> Tuple[str, ...]:
    if isinstance(extensions, str):
        extensions = extensions.split(",")
    exts = tuple("." + e.strip().lstrip(".").lower() for e in extensions if e.strip())
    if not exts:
        raise ManifestError("make_manifests: no file extensions given; pass e.g. wav,flac")
    return exts


def make_manifests(
    audio_dir,
    dest,
    valid_percent: float = 0.01,
    extensions: Sequence[str] = ("wav", "flac", "ogg"),
    seed: int = 42,
    path_must_contain: Optional[str] = None,
    train_name: str = "train",
    valid_name: str = "valid",
) -> Dict:
    """Write ``<dest>/<train_name>.tsv`` (and ``<valid_name>.tsv``) for a folder of audio.

    The folder is searched recursively; each file with one of
    ``extensions`` (case-insensitive) is probed with ``soundfile.info`` (header
    only, no decoding) for its frame count and sample rate. Files libsndfile
    cannot read, or with no frames, are skipped and reported. The valid clips are
    drawn with ``seed``; both manifests list their clips sorted by relative path.
    The root line is the
    absolute ``audio_dir``.

    Args:
        audio_dir: folder with the audio (searched recursively).
        dest: folder for the manifests (created if needed).
        valid_percent: fraction in ``[0, 1)`` of the clips for the valid split
            (0.01 = 1%), at least ``MIN_CLIPS`` of them (a warning says so);
            with 0, or too few clips for two splits of that size, no valid manifest
            is written (a warning says why).
        extensions: file extensions to include, without dots.
        seed: seed of the valid split.
        path_must_contain: if given, keep only files whose path relative to
            ``audio_dir`` contains this string.
        train_name, valid_name: manifest file names without ``.tsv``.

    Returns:
        Summary dict: ``root``, ``train_manifest``, ``valid_manifest`` (None if
        not written), ``num_found``, ``num_train``, ``num_valid``,
        ``num_skipped``, ``skipped`` (first few ``{"path", "reason"}``),
        ``sample_rates`` (``{rate: count}``), ``total_hours``, ``warnings``.
    """
    audio_dir = os.path.abspath(os.fspath(audio_dir))
    dest = os.fspath(dest)
    if not os.path.isdir(audio_dir):
        raise ManifestError(f"audio directory {audio_dir} does not exist; check the path")
    if not 0 <= valid_percent < 1:
        raise ManifestError(
            f"valid_percent={valid_percent} is outside [0, 1); it is a fraction "
            "(0.01 = 1% of the clips)"
        )
    exts = _normalise_extensions(extensions)

    entries: List[Tuple[str, int]] = []
    rates: Dict[int, int] = {}
    total_seconds = 0.0
    skipped: List[Dict[str, str]] = []
    num_skipped = 0
    for rel_path in _find_audio(audio_dir, exts, path_must_contain):
        if any(ch in rel_path for ch in "\t\r\n"):
            # The manifest format (path<TAB>size lines) cannot hold such a name.
            probed, reason = None, "its name has a tab or newline; rename the file"
        else:
            probed, reason = _probe(os.path.join(audio_dir, rel_path))
        if probed is None:
            num_skipped += 1
            if len(skipped) < MAX_REPORTED_SKIPS:
                skipped.append({"path": rel_path, "reason": reason})
            continue
        frames, rate = probed
        entries.append((rel_path, frames))
        rates[rate] = rates.get(rate, 0) + 1
        total_seconds += frames / rate

    summary_warnings: List[str] = []
    if num_skipped:
        names = ", ".join(f"{s['path']!r} ({s['reason']})" for s in skipped)
        more = f" and {num_skipped - len(skipped)} more" if num_skipped > len(skipped) else ""
        message = (
            f"skipped {num_skipped} file(s) under {audio_dir} that cannot be listed: "
            f"{names}{more}; re-encode, rename or delete them"
        )
        logger.warning(message)
        summary_warnings.append(message)
    if not entries:
        raise ManifestError(
            f"no readable audio files with extensions {', '.join(exts)} under "
            f"{audio_dir}" + (f" containing {path_must_contain!r}" if path_must_contain else "")
            + f" ({num_skipped} unreadable); check the folder and --ext"
        )
    other_rates = {r: n for r, n in rates.items() if r != EXPECTED_SAMPLE_RATE}
    if other_rates:
        listed = ", ".join(f"{n} file(s) at {r} Hz" for r, n in sorted(other_rates.items()))
        message = (
            f"{listed} under {audio_dir}, expected {EXPECTED_SAMPLE_RATE} Hz; resample "
            "them (e.g. sox in.wav -r 16000 out.wav) or set task.resample=true "
            "(manifest sizes are frames at each file's own rate)"
        )
        logger.warning(message)
        summary_warnings.append(message)

    is_valid = _pick_valid(len(entries), valid_percent, seed)
    train = [e for e, v in zip(entries, is_valid) if not v]
    valid = [e for e, v in zip(entries, is_valid) if v]
    train_path = os.path.join(dest, f"{train_name}.tsv")
    write_manifest(train_path, audio_dir, train)
    valid_path: Optional[str] = os.path.join(dest, f"{valid_name}.tsv")
    if valid:
        write_manifest(valid_path, audio_dir, valid)
        asked = int(round(valid_percent * len(entries)))
        if asked < len(valid):
            message = (f"{valid_path}: {len(valid)} clips, not {asked} ({valid_percent:g} of "
                       f"{len(entries)}): a valid split needs at least {MIN_CLIPS}")
            logger.warning(message)
            summary_warnings.append(message)
    else:
        note = f"no valid manifest written (valid_percent={valid_percent}, {len(entries)} clip(s))"
        if valid_percent > 0:
            note += (f": a valid split needs at least {MIN_CLIPS} clips and train "
                     f"{MIN_CLIPS} more; add clips, or train with "
                     "dataset.disable_validation=true")
        if os.path.exists(valid_path):
            note += f"; an older {valid_path} exists and was left untouched"
        (logger.warning if valid_percent > 0 else logger.info)(note)
        summary_warnings.append(note)
        valid_path = None

    return {
        "root": audio_dir,
        "train_manifest": train_path,
        "valid_manifest": valid_path,
        "num_found": len(entries) + num_skipped,
        "num_train": len(train),
        "num_valid": len(valid),
        "num_skipped": num_skipped,
        "skipped": skipped,
        "sample_rates": dict(sorted(rates.items())),
        "total_hours": round(total_seconds / 3600.0, 4),
        "warnings": summary_warnings,
    }


# ---------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m uamix_fairseq.manifest",
        description=(
            "Write fairseq audio manifests (train.tsv, valid.tsv) for a folder of "
            "audio files. Each line is relative/path<TAB>num_samples; the first "
            "line is the absolute folder."
        ),
    )
    parser.add_argument("audio_dir", metavar="AUDIO_DIR", help="folder searched recursively for audio files")
    parser.add_argument("--dest", required=True, help="folder to write the .tsv manifests into (created if missing)")
    parser.add_argument(
        "--valid-percent",
        type=float,
        default=0.01,
        help="fraction in [0, 1) of the clips put in valid.tsv (0.01 = 1%%), at least 2 clips; 0 (or fewer than 4 clips) writes no valid.tsv (default: 0.01)",
    )
    parser.add_argument(
        "--ext",
        default="wav,flac,ogg",
        help="comma-separated file extensions to include, case-insensitive (default: wav,flac,ogg)",
    )
    parser.add_argument("--seed", type=int, default=42, help="random seed of the valid split (default: 42)")
    parser.add_argument(
        "--path-must-contain",
        default=None,
        help="keep only files whose path relative to AUDIO_DIR contains this string",
    )
    parser.add_argument("--train-name", default="train", help="name of the train manifest without .tsv (default: train)")
    parser.add_argument("--valid-name", default="valid", help="name of the valid manifest without .tsv (default: valid)")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command-line entry point; prints the summary as JSON and returns the exit code."""
    args = _build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        summary = make_manifests(
            args.audio_dir,
            args.dest,
            valid_percent=args.valid_percent,
            extensions=args.ext.split(","),
            seed=args.seed,
            path_must_contain=args.path_must_contain,
            train_name=args.train_name,
            valid_name=args.valid_name,
        )
    except ManifestError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
