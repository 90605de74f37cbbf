"""The part every dataset converter shares.

A converter lists, for each split, the clips it expects (absolute path, or None when
it could not even find a file for the clip, plus the class names). :class:`Preparation`
then

- reads each file's header once with ``soundfile.info`` (frame count and sample rate;
  the same file listed in several splits is probed once),
- counts clips whose file is missing and files libsndfile cannot read, with reasons,
- writes ``<split>.tsv`` and ``<split>.label`` from one list, so their lines line up,
  plus ``missing_<split>.txt`` when clips of a split are missing,
- refuses a result without a single clip, and
- returns a JSON-ready summary (clips per split, classes, skips with reasons, missing
  counts, sample rates with a warning when they are not 16 kHz).

Manifest sizes are frames at each file's own rate, as fairseq's ``wav2vec_manifest``
and :func:`uamix_fairseq.manifest.make_manifests` write them; the loader resamples
when ``task.resample=true``.
"""

import logging
import os
from collections import Counter
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import soundfile as sf

from ..labels import write_labels
from ..manifest import ManifestError, write_manifest

logger = logging.getLogger(__name__)

EXPECTED_SAMPLE_RATE = 16000
# The loader refuses clips shorter than one 25 ms analysis frame (400 samples at 16 kHz).
MIN_SECONDS = 0.025
# How many skipped files the summary names (all of them are counted).
MAX_EXAMPLES = 10
# How many class names the summary lists (all of them are in the .label files).
MAX_LISTED_CLASSES = 60
# Log progress every this many probed files.
PROGRESS_EVERY = 10000
DEFAULT_EXTENSIONS = ("wav", "flac", "ogg")


class PrepareError(ManifestError):
    """A dataset cannot be converted: bad source layout, bad metadata, or no clips."""


@dataclass
class Clip:
    """One clip a converter expects.

    Attributes:
        path: absolute path of the audio file, or None if no file was found for it.
        labels: class names (one, or several for multi-label data).
        ref: how the clip is named in ``missing_<split>.txt`` when it is missing
            (the path as the dataset lists it, or e.g. ``YTID,start,end``).
    """

    path: Optional[str]
    labels: Sequence[str]
    ref: str


def check_source_dir(path, what: str, hint: str) -> str:
    """Absolute ``path`` if it is a directory, else a :class:`PrepareError`."""
    path = os.path.abspath(os.fspath(path))
    if not os.path.isdir(path):
        raise PrepareError(f"{what} {path} does not exist or is not a directory; {hint}")
    return path


def check_source_file(path, what: str, hint: str) -> str:
    path = os.path.abspath(os.fspath(path))
    if not os.path.isfile(path):
        raise PrepareError(f"{what} {path} does not exist; {hint}")
    return path


def normalise_extensions(extensions) -> Tuple[str, ...]:
    """``"wav,FLAC"`` or ``["wav", ".flac"]`` -> ``(".wav", ".flac")``."""
    if isinstance(extensions, str):
        extensions = extensions.split(",")
    exts = tuple("." + e.strip().lstrip(".").lower() for e in extensions if e.strip())
    if not exts:
        raise PrepareError("no file extensions given; pass e.g. --ext wav,flac")
    return exts


def find_files(top: str, exts: Tuple[str, ...]) -> List[str]:
    """Paths relative to ``top`` of the files ending in one of ``exts``
    (case-insensitive), sorted. Hidden folders are skipped; symlinked folders are
    followed, each real folder once."""
    found, seen = [], set()
    for folder, dirs, files in os.walk(top, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if name.lower().endswith(exts) and not name.startswith("."):
                found.append(os.path.relpath(os.path.join(folder, name), top))
    return sorted(found)


def _check_class_name(name: str, where: str):
    if not isinstance(name, str) or not name.strip() or any(c in name for c in ",\t\r\n"):
        raise PrepareError(
            f"{where}: class name {name!r} is empty or contains a comma, tab or newline, "
            "which the .label format cannot hold; rename the class"
        )


class Preparation:
    """Collects the splits of one conversion, then writes them all at once.

    Args:
        dataset: converter name, for messages and the summary.
        source: what the user pointed at (for the summary).
        dest: folder the manifests and labels go to.
        root: the manifest root line; every clip path must be under it.
        empty_hint: what to check when no clip at all is usable.
    """

    def __init__(self, dataset: str, source, dest, root, empty_hint: str = ""):
        self.dataset = dataset
        self.source = os.path.abspath(os.fspath(source))
        self.dest = os.path.abspath(os.fspath(dest))
        self.root = os.path.abspath(os.fspath(root))
        self.empty_hint = empty_hint
        self.warnings: List[str] = []
        self.extra: Dict = {}
        self._probed: Dict[str, Tuple] = {}  # path -> (frames, rate) or (None, reason)
        self._splits: Dict[str, Dict] = {}
        self._skips = Counter()
        self._skip_examples: List[Dict[str, str]] = []
        self._missing_refs = set()
        self._listed_refs = set()

    # -- recording ----------------------------------------------------------

    def warn(self, message: str):
        logger.warning(message)
        self.warnings.append(message)

    def skip(self, ref: str, reason: str, detail: str = ""):
        """Count a file or row left out, under the short ``reason``."""
        self._skips[reason] += 1
        if len(self._skip_examples) < MAX_EXAMPLES:
            text = f"{reason}: {detail}" if detail else reason
            self._skip_examples.append({"path": ref, "reason": text})

    def probe(self, path: str) -> Optional[Tuple[int, int]]:
        """``(frames, sample_rate)`` from the header of an existing file, or None
        (the file is then counted as skipped, once, with libsndfile's reason)."""
        if path in self._probed:
            result = self._probed[path]
            return result if result[0] is not None else None
        reason, kind = None, "unreadable"
        if any(c in os.path.relpath(path, self.root) for c in "\t\r\n"):
            reason, kind = "the manifest format cannot hold a tab or newline", "bad file name"
        else:
            try:
                info = sf.info(path)
                if info.frames <= 0:
                    reason = "no audio frames"
            except (sf.SoundFileError, RuntimeError, OSError) as err:
                # libsndfile's text names the path; the summary names it already.
                reason = str(err).strip()
                if path in reason:
                    reason = reason.split(path)[-1].lstrip("'\": ")
                reason = reason or type(err).__name__
        if reason is None:
            result = (int(info.frames), int(info.samplerate))
        else:
            result = (None, reason)
            self.skip(os.path.relpath(path, self.root), kind, reason)
        self._probed[path] = result
        if len(self._probed) % PROGRESS_EVERY == 0:
            logger.info("%s: probed %d files", self.dataset, len(self._probed))
        return result if reason is None else None

    def readable(self, paths: Iterable[str]) -> List[str]:
        """The paths whose headers read; the others are counted as skipped."""
        return [p for p in paths if self.probe(p) is not None]

    def add_split(self, name: str, clips: Iterable[Clip]):
        """Probe the clips of split ``name`` (kept in the given order)."""
        if name in self._splits:
            raise PrepareError(f"{self.dataset}: split {name!r} given twice")
        entries, missing, unreadable, listed = [], [], 0, 0
        for clip in clips:
            listed += 1
            self._listed_refs.add(clip.ref)
            for label in clip.labels:
                _check_class_name(label, f"{self.dataset} split {name}, clip {clip.ref}")
            if not clip.labels:
                raise PrepareError(f"{self.dataset} split {name}, clip {clip.ref}: no class name")
            if clip.path is None or not os.path.isfile(clip.path):
                missing.append(clip.ref)
                self._missing_refs.add(clip.ref)
                continue
            rel_path = os.path.relpath(clip.path, self.root)
            if rel_path.startswith(".." + os.sep):
                raise AssertionError(f"{clip.path} is outside the manifest root {self.root}")
            probed = self.probe(clip.path)
            if probed is None:
                unreadable += 1
                continue
            entries.append((rel_path, probed[0], list(clip.labels)))
        self._splits[name] = {"entries": entries, "missing": missing,
                              "unreadable": unreadable, "listed": listed}

    # -- writing ------------------------------------------------------------

    def _stale(self, path: str):
        if os.path.exists(path):
            self.warn(f"{path} is from an earlier run (this run wrote no such split); "
                      "delete it if it is not wanted")

    def finish(self) -> Dict:
        """Write every non-empty split and return the summary.

        Raises:
            PrepareError: when no split has a single usable clip (nothing is written).
        """
        total = sum(len(s["entries"]) for s in self._splits.values())
        if total == 0:
            raise PrepareError(
                f"{self.dataset}: no usable clips under {self.root} ({len(self._listed_refs)} "
                f"listed, {len(self._missing_refs)} missing, {sum(self._skips.values())} "
                "skipped); nothing was written"
                + (f"; {self.empty_hint}" if self.empty_hint else "")
            )

        os.makedirs(self.dest, exist_ok=True)
        splits_summary = {}
        all_classes = set()
        for name, split in self._splits.items():
            entries = split["entries"]
            manifest_path = os.path.join(self.dest, f"{name}.tsv")
            label_path = os.path.join(self.dest, f"{name}.label")
            missing_path = os.path.join(self.dest, f"missing_{name}.txt")
            classes = {c for _, _, labels in entries for c in labels}
            all_classes |= classes
            info = {"clips": len(entries), "listed": split["listed"],
                    "missing": len(split["missing"]), "unreadable": split["unreadable"],
                    "classes": len(classes), "manifest": None, "missing_list": None}
            if entries:
                write_manifest(manifest_path, self.root, [(r, n) for r, n, _ in entries])
                write_labels(label_path, [labels for _, _, labels in entries])
                info["manifest"] = manifest_path  # <split>.label is beside it
            else:
                self.warn(f"split {name}: none of its {split['listed']} listed clips is "
                          f"usable, so {name}.tsv/.label were not written")
                self._stale(manifest_path)
            if split["missing"]:
                with open(missing_path, "w", encoding="utf-8") as f:
                    f.write("\n".join(split["missing"]) + "\n")
                info["missing_list"] = missing_path
                found = split["listed"] - len(split["missing"])
                self.warn(f"split {name}: {found:,} of {split['listed']:,} listed clips found; "
                          f"{len(split['missing']):,} missing, list in {missing_path}")
            elif os.path.exists(missing_path):
                os.remove(missing_path)  # from an earlier run; it no longer applies
            splits_summary[name] = info

        rates = Counter()
        seconds, short = 0.0, 0
        for frames, rate in self._probed.values():
            if frames is None:
                continue
            rates[rate] += 1
            seconds += frames / rate
            short += frames / rate < MIN_SECONDS
        other = {r: n for r, n in rates.items() if r != EXPECTED_SAMPLE_RATE}
        if other:
            listed = ", ".join(f"{n:,} file(s) at {r} Hz" for r, n in sorted(other.items()))
            self.warn(
                f"{listed}, not {EXPECTED_SAMPLE_RATE} Hz: training needs task.resample=true "
                f"(the loader then resamples to {EXPECTED_SAMPLE_RATE} Hz), or resample the "
                f"files first (e.g. sox in.wav -r {EXPECTED_SAMPLE_RATE} out.wav) and run this "
                "again on the copies; manifest sizes are frames at each file's own rate"
            )
        if short:
            self.warn(f"{short:,} file(s) shorter than {MIN_SECONDS * 1000:.0f} ms; the loader "
                      "refuses them unless task.skip_bad_audio=true")
        if self._skips:
            reasons = ", ".join(f"{n:,} {r}" for r, n in self._skips.most_common())
            self.warn(f"skipped {sum(self._skips.values()):,} file(s)/row(s): {reasons}; "
                      "see 'skipped' in the summary")

        names = sorted(all_classes)
        summary = {
            "dataset": self.dataset,
            "source": self.source,
            "dest": self.dest,
            "root": self.root,
            "splits": splits_summary,
            "num_classes": len(names),
            "classes": names[:MAX_LISTED_CLASSES],
            "classes_truncated": len(names) > MAX_LISTED_CLASSES,
            "files_probed": len(self._probed),
            "missing": len(self._missing_refs),
            "skipped": {"total": sum(self._skips.values()),
                        "by_reason": dict(self._skips.most_common()),
                        "examples": self._skip_examples},
            "sample_rates": {str(r): n for r, n in sorted(rates.items())},
            "total_hours": round(seconds / 3600.0, 4),
        }
        summary.update(self.extra)
        summary["warnings"] = self.warnings
        return summary
