"""Checkpoint files that are never left half-written.

A stopped process (SIGTERM, SIGKILL, a full disk) must not leave a truncated file under a
checkpoint's name. Every write here goes to a temporary file in the same folder,
``<name>.<pid>.tmp``, which is flushed, fsync'ed and then renamed over the target with
``os.replace`` (atomic on POSIX file systems), so the target name holds either the old
complete file or the new complete file. A stop leaves at most a ``.tmp`` file behind,
which ``remove_stale_temporaries`` deletes at the next start.

Knows nothing of fairseq; ``uamix_fairseq.tasks.checkpoint_safety`` plugs these into
fairseq's checkpoint path.
"""

import contextlib
import os
import shutil
import zipfile

import torch

TMP_SUFFIX = ".tmp"
# fairseq's checkpoint names all start like this (checkpoint_last.pt, checkpoint_1_300.pt,
# checkpoint_best.pt, checkpoint3.pt, checkpoint.best_loss_1.23.pt).
CHECKPOINT_PREFIX = "checkpoint"


def _fsync_folder(folder: str) -> None:
    """Make a rename in ``folder`` durable (a no-op where folders cannot be fsync'ed)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_atomically(path: str, write) -> None:
    """Call ``write(binary_file)`` on a temporary file beside ``path``, then rename it."""
    path = os.path.abspath(path)
    tmp = f"{path}.{os.getpid()}{TMP_SUFFIX}"
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    _fsync_folder(os.path.dirname(path))


def atomic_save(obj, path: str) -> None:
    """``torch.save(obj, path)``, but ``path`` never holds a partial file."""
    _write_atomically(path, lambda f: torch.save(obj, f))


def atomic_copy(src: str, dst: str) -> None:
    """Copy the file ``src`` to ``dst``; ``dst`` never holds a partial copy."""
    with open(src, "rb") as source:
        _write_atomically(dst, lambda f: shutil.copyfileobj(source, f, 1 << 20))


def is_complete(path: str) -> bool:
    """True if ``path`` is a whole ``torch.save`` file (torch's zip format, the default
    since torch 1.6): the zip directory, which is written last, is there and the pickle
    it lists reads back with a correct checksum. Cheap: tensor data is not read."""
    try:
        with zipfile.ZipFile(path) as archive:
            pickles = [n for n in archive.namelist() if n.rsplit("/", 1)[-1] == "data.pkl"]
            if len(pickles) != 1:
                return False
            archive.read(pickles[0])  # raises BadZipFile on a checksum mismatch
    except (OSError, zipfile.BadZipFile, EOFError, ValueError):
        return False
    return True


def _checkpoint_names(folder: str):
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return []
    return [n for n in names if n.startswith(CHECKPOINT_PREFIX)
            and os.path.isfile(os.path.join(folder, n))]


def newest_complete_checkpoint(folder: str, exclude=()):
    """The path of the most recently written complete ``checkpoint*.pt`` in ``folder``
    (by modification time: the files of one run are written in training order), leaving
    out the names in ``exclude``; None if there is none."""
    names = [n for n in _checkpoint_names(folder) if n.endswith(".pt") and n not in exclude]
    paths = sorted((os.path.join(folder, n) for n in names), key=os.path.getmtime,
                   reverse=True)
    return next((p for p in paths if is_complete(p)), None)


def remove_stale_temporaries(folder: str) -> list:
    """Delete the ``checkpoint*.tmp`` files a stopped run left in ``folder`` (ours and
    fairseq's own ``<name>.pt.tmp``); returns the paths removed. Call it only while no
    other process writes into ``folder`` (hold its ``run_lock``)."""
    removed = []
    for name in _checkpoint_names(folder):
        if name.endswith(TMP_SUFFIX):
            path = os.path.join(folder, name)
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
                removed.append(path)
    return sorted(removed)
