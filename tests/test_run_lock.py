"""uamix_fairseq/tasks/run_lock.py: one process per folder, released when the holder dies."""

import os
import signal
import socket
import subprocess
import sys

import pytest

from uamix_fairseq.tasks.run_lock import LOCK_NAME, FolderInUseError, lock_folder

MODULE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                      "uamix_fairseq", "tasks", "run_lock.py")

# Takes the lock, says so, then waits to be killed (or fails with the error message).
# Loads run_lock.py by its path: importing the package would import fairseq (seconds).
_HOLDER = """
import importlib.util, sys, time
spec = importlib.util.spec_from_file_location("run_lock", {module!r})
run_lock = importlib.util.module_from_spec(spec)
spec.loader.exec_module(run_lock)
FolderInUseError, lock_folder = run_lock.FolderInUseError, run_lock.lock_folder
try:
    lock_folder({folder!r})
except FolderInUseError as e:
    print("REFUSED", e, flush=True)
    sys.exit(3)
print("LOCKED", flush=True)
time.sleep(120)
"""


def _holder(folder):
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER.format(module=MODULE, folder=folder)],
                            stdout=subprocess.PIPE, text=True)
    return proc, proc.stdout.readline().strip()


def test_second_process_is_refused_until_the_first_dies(tmp_path):
    folder = str(tmp_path / "ckpt")
    first, said = _holder(folder)
    try:
        assert said == "LOCKED"
        with pytest.raises(FolderInUseError) as err:
            lock_folder(folder)
        message = str(err.value)
        assert f"checkpoint.save_dir {folder} is in use" in message
        assert f"pid {first.pid} on host {socket.gethostname()}" in message
        assert os.path.join(os.path.realpath(folder), LOCK_NAME) in message
        assert "another checkpoint.save_dir" in message
    finally:
        first.send_signal(signal.SIGKILL)  # no clean-up code runs: the kernel frees it
        first.wait()
    path = lock_folder(folder)
    assert lock_folder(folder) == path  # taking it again in the same process: a no-op
    assert f"pid {os.getpid()} on host" in open(path).read()
    second, said = _holder(folder)
    assert said.startswith("REFUSED") and f"pid {os.getpid()} " in said
    assert second.wait() == 3
