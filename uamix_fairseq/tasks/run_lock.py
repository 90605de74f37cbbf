"""One training run per checkpoint folder: an exclusive lock on a file in the folder.

``lock_folder(folder)`` takes ``fcntl.flock`` on ``<folder>/.uamix_train.lock`` and keeps
the file open for the rest of the process; the kernel releases the lock when the process
ends, however it ends (exit, crash, SIGKILL), so a stopped run never leaves a stale lock.
The holder writes its pid and host into the file, so a second run can name it.
The file itself stays in the folder (deleting a lock file races with the next run).

Knows nothing of fairseq; ``uamix_fairseq.tasks.checkpoint_safety`` calls it on rank 0.
"""

import datetime
import fcntl
import os
import socket

LOCK_NAME = ".uamix_train.lock"

_held = {}  # real path of a folder -> the open lock file this process holds


class FolderInUseError(RuntimeError):
    """Another process holds the folder's lock."""


def lock_folder(folder: str, what: str = "checkpoint.save_dir") -> str:
    """Lock ``folder`` (created if missing) for this process; returns the lock file's
    path. Taking a lock this process already holds is a no-op. Raises
    ``FolderInUseError`` naming the folder and the holder if another process has it."""
    key = os.path.realpath(folder)
    if key in _held:
        return _held[key].name
    os.makedirs(key, exist_ok=True)
    path = os.path.join(key, LOCK_NAME)
    f = open(path, "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "a process that has not written its pid yet"
        f.close()
        raise FolderInUseError(
            f"{what} {folder} is in use by another training run ({holder}; lock file "
            f"{path}). Two runs in one folder overwrite each other's checkpoints: wait "
            f"for that run to end or stop it, or give this run another {what}.") from None
    started = datetime.datetime.now().isoformat(timespec="seconds")
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()} on host {socket.gethostname()}, since {started}\n")
    f.flush()
    _held[key] = f
    return path
