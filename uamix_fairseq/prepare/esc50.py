"""ESC-50 (``SRC/meta/esc50.csv`` + ``SRC/audio/*.wav``) -> the five cross-validation
folds and one manifest of everything, labelled with the ``category`` names.

For each fold ``f``: ``fold{f}_test`` holds the rows of fold ``f`` and ``fold{f}_train``
the rows of the other folds; ``all`` holds every row. Rows keep the csv's order.

ESC-50 is distributed at 44.1 kHz. Nothing is resampled here: the sizes are frames at
44.1 kHz (220500 for a 5 s clip), and training needs ``task.resample=true`` unless the
audio is resampled first (then point ``--audio-dir`` at the 16 kHz copy).
"""

import csv
import os
from typing import Dict, Optional, Sequence

from .core import Clip, Preparation, PrepareError, check_source_dir, check_source_file

NAME = "esc50"
HELP = "ESC-50 (meta/esc50.csv + audio/) -> fold{1..5}_train/_test and all"
REQUIRED_COLUMNS = ("filename", "fold", "category")


def read_esc50_csv(path, esc10_only: bool = False):
    """Rows of ``esc50.csv`` as ``(filename, fold, category)``, in file order."""
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f)
        columns = [c.strip() for c in (reader.fieldnames or [])]
        need = REQUIRED_COLUMNS + (("esc10",) if esc10_only else ())
        absent = [c for c in need if c not in columns]
        if absent:
            raise PrepareError(
                f"{path}: missing column(s) {', '.join(absent)} (header: "
                f"{','.join(columns) or 'empty file'}); expected ESC-50's "
                "filename,fold,target,category,esc10,src_file,take"
            )
        reader.fieldnames = columns
        rows = []
        for number, row in enumerate(reader, start=2):
            values = {k: (row.get(k) or "").strip() for k in need}
            if not values["filename"] or not values["category"]:
                raise PrepareError(f"{path} line {number}: empty filename or category")
            try:
                fold = int(values["fold"])
            except ValueError:
                raise PrepareError(f"{path} line {number}: fold {values['fold']!r} is not "
                                   "an integer") from None
            if esc10_only and values["esc10"].lower() not in ("true", "1"):
                continue
            rows.append((values["filename"], fold, values["category"]))
    if not rows:
        raise PrepareError(f"{path}: no rows" + (" with esc10=True" if esc10_only else ""))
    return rows


def prepare_esc50(src, dest, audio_dir=None, csv_path=None, esc10_only: bool = False,
                  folds: Optional[Sequence[int]] = None) -> Dict:
    """Write ``fold{f}_train``, ``fold{f}_test`` for each fold and ``all``.

    Args:
        src: the ESC-50 folder (ESC-50-master).
        dest: output folder.
        audio_dir: the audio folder (default ``src/audio``), e.g. a 16 kHz copy.
        csv_path: the metadata (default ``src/meta/esc50.csv``).
        esc10_only: keep only the ESC-10 subset (rows with ``esc10`` True).
        folds: the folds to write (default: every fold in the csv).
    """
    src = check_source_dir(src, "ESC-50 folder", "give the folder holding meta/ and audio/")
    csv_path = check_source_file(csv_path or os.path.join(src, "meta", "esc50.csv"),
                                 "ESC-50 metadata", "give SRC as the ESC-50 folder or pass --csv")
    audio_dir = check_source_dir(audio_dir or os.path.join(src, "audio"), "ESC-50 audio folder",
                                 "give SRC as the ESC-50 folder or pass --audio-dir")
    rows = read_esc50_csv(csv_path, esc10_only)
    present = sorted({fold for _, fold, _ in rows})
    folds = list(folds) if folds else present
    unknown = [f for f in folds if f not in present]
    if unknown:
        raise PrepareError(f"fold(s) {unknown} not in {csv_path} (folds there: {present})")

    prep = Preparation(NAME, src, dest, root=audio_dir,
                       empty_hint=f"check that {audio_dir} holds the .wav files named in "
                                  f"{csv_path}")

    def clips(keep):
        return [Clip(os.path.join(audio_dir, name), [category], name)
                for name, fold, category in rows if keep(fold)]

    for f in folds:
        prep.add_split(f"fold{f}_train", clips(lambda fold, f=f: fold != f))
        prep.add_split(f"fold{f}_test", clips(lambda fold, f=f: fold == f))
    prep.add_split("all", clips(lambda fold: True))
    prep.extra["folds"] = folds
    prep.extra["subset"] = "ESC-10" if esc10_only else "ESC-50"
    return prep.finish()


def add_arguments(parser):
    parser.add_argument("--audio-dir", default=None,
                        help="folder with the clips (default: SRC/audio); e.g. a copy "
                             "resampled to 16 kHz with the same file names")
    parser.add_argument("--csv", default=None,
                        help="metadata csv (default: SRC/meta/esc50.csv)")
    parser.add_argument("--esc10", action="store_true",
                        help="keep only the ESC-10 subset (rows whose esc10 column is True)")
    parser.add_argument("--folds", type=int, nargs="+", default=None,
                        help="folds to write train/test pairs for (default: all in the csv)")


def run(args) -> Dict:
    return prepare_esc50(args.src, args.dest, audio_dir=args.audio_dir, csv_path=args.csv,
                         esc10_only=args.esc10, folds=args.folds)
