"""AudioSet segment lists over clips already downloaded -> one manifest per list.

Inputs, as Google distributes them:

- segment csvs (``balanced_train_segments.csv``, ``unbalanced_train_segments.csv``,
  ``eval_segments.csv``): comment lines starting with ``#``, then
  ``YTID, start_seconds, end_seconds, "/m/xxx,/m/yyy"``;
- ``class_labels_indices.csv``: ``index,mid,display_name`` (display names may hold
  commas inside quotes).

Labels are written as ``mid`` s (``/m/09x0r``), because display names can contain the
comma the ``.label`` format separates classes with; ``classes.tsv`` beside them maps
``mid<TAB>display_name`` in the official index order.

Audio files are found by name anywhere under the audio folder. A name pattern uses
``{ytid}``, ``{start}`` / ``{end}`` (as written in the csv, e.g. ``30.000``),
``{start_int}`` / ``{end_int}`` (whole seconds) and ``{start_ms}`` / ``{end_ms}``. A
pattern ending in an audio extension must match the file name exactly; one without
matches any audio extension. By default the common conventions are tried in order
(``DEFAULT_PATTERNS``, listed under --name-pattern); the first that names an existing
file wins.
"""

import argparse
import csv
import os
import re
from collections import Counter
from typing import Dict, List, Optional, Sequence, Tuple

from .core import (DEFAULT_EXTENSIONS, Clip, Preparation, PrepareError, check_source_dir,
                   check_source_file, find_files, normalise_extensions)

NAME = "audioset"
HELP = "AudioSet segment csvs + class_labels_indices.csv over downloaded clips -> one manifest per csv"
OFFICIAL_CSVS = (("balanced_train", "balanced_train_segments.csv"),
                 ("unbalanced_train", "unbalanced_train_segments.csv"),
                 ("eval", "eval_segments.csv"))
DEFAULT_PATTERNS = ("{ytid}", "Y{ytid}", "{ytid}_{start}", "{ytid}_{start_int}",
                    "Y{ytid}_{start}", "{ytid}_{start}_{end}", "{ytid}_{start_int}_{end_int}",
                    "{ytid}_{start_ms}_{end_ms}")
_MID = re.compile(r"^/[a-z]/[0-9a-z_]+$")
_SPLIT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def read_class_labels(path) -> List[Tuple[str, str]]:
    """``[(mid, display_name), ...]`` in index order."""
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f)
        columns = [c.strip() for c in (reader.fieldnames or [])]
        absent = [c for c in ("index", "mid", "display_name") if c not in columns]
        if absent:
            raise PrepareError(f"{path}: missing column(s) {', '.join(absent)} (header: "
                               f"{','.join(columns) or 'empty file'}); expected "
                               "index,mid,display_name")
        reader.fieldnames = columns
        rows = {}
        for number, row in enumerate(reader, start=2):
            try:
                index = int(row["index"])
            except (TypeError, ValueError):
                raise PrepareError(f"{path} line {number}: index {row['index']!r} is not an "
                                   "integer") from None
            mid = (row["mid"] or "").strip()
            if not mid or "," in mid:
                raise PrepareError(f"{path} line {number}: bad mid {mid!r}")
            name = " ".join((row["display_name"] or "").split())
            if index in rows:
                raise PrepareError(f"{path} line {number}: index {index} given twice")
            rows[index] = (mid, name)
    if not rows:
        raise PrepareError(f"{path} has no classes")
    return [rows[i] for i in sorted(rows)]


def read_segments(path, known_mids) -> List[Tuple[str, str, str, List[str]]]:
    """``[(ytid, start, end, [mid, ...]), ...]`` of a segment csv, in file order;
    start/end are kept as written (``30.000``)."""
    rows = []
    with open(path, encoding="utf-8-sig", newline="") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            fields = next(csv.reader([line], skipinitialspace=True))
            fields = [x.strip() for x in fields]
            if fields[0] == "YTID":  # an uncommented header (some re-distributions)
                continue
            if len(fields) > 4 and all(_MID.match(x) for x in fields[3:]):
                fields = fields[:3] + [",".join(fields[3:])]  # unquoted label list
            if len(fields) != 4:
                raise PrepareError(
                    f"{path} line {number}: expected 4 fields (YTID, start_seconds, "
                    f"end_seconds, \"labels\"), found {len(fields)} in {line.strip()!r}"
                )
            ytid, start, end, labels = fields
            try:
                float(start), float(end)
            except ValueError:
                raise PrepareError(f"{path} line {number}: start/end {start!r}, {end!r} are "
                                   "not numbers") from None
            mids = list(dict.fromkeys(m.strip() for m in labels.split(",") if m.strip()))
            if not ytid or not mids:
                raise PrepareError(f"{path} line {number}: empty YTID or label list")
            unknown = [m for m in mids if m not in known_mids]
            if unknown:
                raise PrepareError(
                    f"{path} line {number}: label(s) {', '.join(unknown)} are not in the "
                    "class list; use class_labels_indices.csv of the same AudioSet release"
                )
            rows.append((ytid, start, end, mids))
    return rows


def _placeholders(ytid, start, end) -> Dict[str, str]:
    def ms(text):
        return str(int(round(float(text) * 1000)))
    return {"ytid": ytid, "start": start, "end": end,
            "start_int": str(int(float(start))), "end_int": str(int(float(end))),
            "start_ms": ms(start), "end_ms": ms(end)}


class AudioIndex:
    """The audio files under a folder, looked up by file name or by name without extension."""

    def __init__(self, audio_dir: str, exts: Tuple[str, ...]):
        self.audio_dir, self.exts = audio_dir, exts
        self.by_name: Dict[str, str] = {}
        self.by_stem: Dict[str, str] = {}
        self.duplicates = 0
        for rel in find_files(audio_dir, exts):
            name = os.path.basename(rel)
            stem = name[:name.rfind(".")]
            if name in self.by_name or stem in self.by_stem:
                self.duplicates += 1
            self.by_name.setdefault(name, rel)
            self.by_stem.setdefault(stem, rel)

    def __len__(self):
        return len(self.by_name)

    def find(self, name: str) -> Optional[str]:
        if name.lower().endswith(self.exts):
            rel = self.by_name.get(name)
        else:
            rel = self.by_stem.get(name)
        return os.path.join(self.audio_dir, rel) if rel else None


def _resolve_csv(path, src) -> str:
    """``path`` as given, or under ``src`` if it is relative and not found as given."""
    if not os.path.isabs(path) and not os.path.exists(path) and \
            os.path.exists(os.path.join(src, path)):
        path = os.path.join(src, path)
    return check_source_file(path, "segment csv", "check the --split NAME=CSV path")


def prepare_audioset(src, dest, splits: Optional[Sequence[Tuple[str, str]]] = None,
                     audio_dir=None, class_labels=None,
                     name_patterns: Optional[Sequence[str]] = None,
                     extensions=DEFAULT_EXTENSIONS) -> Dict:
    """Args:
        src: the AudioSet folder holding the csvs (and by default the audio).
        dest: output folder.
        splits: ``[(name, csv_path), ...]``; default: the official csvs found in ``src``.
        audio_dir: folder searched (recursively) for the clips (default ``src``).
        class_labels: ``class_labels_indices.csv`` (default ``src/class_labels_indices.csv``).
        name_patterns: file name patterns tried in order (default :data:`DEFAULT_PATTERNS`).
        extensions: audio extensions indexed.
    """
    src = check_source_dir(src, "AudioSet folder", "give the folder with the segment csvs")
    audio_dir = check_source_dir(audio_dir or src, "AudioSet audio folder",
                                 "pass --audio-dir with the downloaded clips")
    class_labels = check_source_file(class_labels or os.path.join(src, "class_labels_indices.csv"),
                                     "class list", "put class_labels_indices.csv in SRC or "
                                     "pass --class-labels")
    if not splits:
        splits = [(name, os.path.join(src, f)) for name, f in OFFICIAL_CSVS
                  if os.path.isfile(os.path.join(src, f))]
        if not splits:
            raise PrepareError(f"no segment csvs given and none of "
                               f"{', '.join(f for _, f in OFFICIAL_CSVS)} is in {src}; "
                               "pass --split NAME=CSV")
    names = [name for name, _ in splits]
    for name in names:
        if not _SPLIT_NAME.match(name) or names.count(name) > 1:
            raise PrepareError(f"split name {name!r} is repeated or not a plain file name "
                               "(letters, digits, _ . -)")
    patterns = list(name_patterns or DEFAULT_PATTERNS)
    for pattern in patterns:
        if "{ytid}" not in pattern:
            raise PrepareError(f"--name-pattern {pattern!r} has no {{ytid}} placeholder")
        try:
            pattern.format(**_placeholders("x", "0.000", "10.000"))
        except (KeyError, IndexError, ValueError) as err:
            raise PrepareError(f"--name-pattern {pattern!r}: bad placeholder {err}; use "
                               "{ytid}, {start}, {end}, {start_int}, {end_int}, "
                               "{start_ms}, {end_ms}") from None

    classes = read_class_labels(class_labels)
    known = {mid for mid, _ in classes}
    segments = {name: read_segments(_resolve_csv(path, src), known) for name, path in splits}
    index = AudioIndex(audio_dir, normalise_extensions(extensions))
    prep = Preparation(NAME, src, dest, root=audio_dir,
                       empty_hint=f"{len(index)} audio file(s) under {audio_dir}; check "
                                  "--audio-dir and --name-pattern")
    if index.duplicates:
        prep.warn(f"{index.duplicates} audio file name(s) occur more than once under "
                  f"{audio_dir}; the first in path order is used")

    used = Counter()
    for name, rows in segments.items():
        clips, seen = [], set()
        for ytid, start, end, mids in rows:
            key = (ytid, start)
            ref = f"{ytid},{start},{end}"
            if key in seen:
                prep.skip(ref, f"duplicate row in {name}")
                continue
            seen.add(key)
            values = _placeholders(ytid, start, end)
            path = None
            for pattern in patterns:
                path = index.find(pattern.format(**values))
                if path:
                    used[pattern] += 1
                    break
            clips.append(Clip(path, mids, ref))
        prep.add_split(name, clips)
    prep.extra["name_patterns_matched"] = {p: used[p] for p in patterns}
    prep.extra["audio_files_indexed"] = len(index)
    classes_path = os.path.join(prep.dest, "classes.tsv")
    prep.extra["classes_file"] = classes_path
    prep.extra["classes_in_class_list"] = len(classes)
    summary = prep.finish()  # raises, writing nothing, when no clip is usable
    with open(classes_path, "w", encoding="utf-8") as f:
        f.writelines(f"{mid}\t{display}\n" for mid, display in classes)
    return summary


def _split_arg(text: str) -> Tuple[str, str]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=CSV, got {text!r}")
    return name, path


def add_arguments(parser):
    parser.add_argument("--split", action="append", type=_split_arg, default=None,
                        metavar="NAME=CSV",
                        help="a segment csv and the name of its manifest, e.g. "
                             "eval=eval_segments.csv (repeatable; a relative CSV is also "
                             "looked up in SRC; default: the official csvs found in SRC, "
                             "named balanced_train, unbalanced_train, eval)")
    parser.add_argument("--audio-dir", default=None,
                        help="folder searched recursively for the clips (default: SRC)")
    parser.add_argument("--class-labels", default=None,
                        help="class list csv (default: SRC/class_labels_indices.csv)")
    parser.add_argument("--name-pattern", action="append", default=None,
                        help="audio file name pattern with {ytid}, {start}, {end}, "
                             "{start_int}, {end_int}, {start_ms}, {end_ms}; with an audio "
                             "extension it matches exactly, without it any of --ext "
                             "(repeatable, tried in order; default: "
                             + ", ".join(DEFAULT_PATTERNS).replace("%", "%%") + ")")
    parser.add_argument("--ext", default=",".join(DEFAULT_EXTENSIONS),
                        help="comma-separated audio extensions indexed (default: wav,flac,ogg)")


def run(args) -> Dict:
    return prepare_audioset(args.src, args.dest, splits=args.split, audio_dir=args.audio_dir,
                            class_labels=args.class_labels, name_patterns=args.name_pattern,
                            extensions=args.ext)
