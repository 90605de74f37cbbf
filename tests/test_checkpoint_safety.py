"""uamix_fairseq/tasks/checkpoint_safety.py through fairseq's own trainer: runs stopped
while saving leave complete checkpoints and resume, a second run into the same
save_dir is refused, a finished run stops without training."""

import os
import signal
import socket
import subprocess
import time

import pytest
import torch
from fairseq import checkpoint_utils

import uamix_fairseq  # noqa: F401  (registers the components, installs the wrappers)
from uamix_fairseq.tasks.run_lock import LOCK_NAME, lock_folder
from uamix_fairseq.tasks import checkpoint_safety

from fairseq_helpers import (
    make_tiny_setup, run_train, tiny_overrides, train_command, train_env,
)

FAULT_TRAIN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fault_train.py")


def _files(save_dir):
    """{name: (size, mtime)} of the files in save_dir (not the lock, not tb/)."""
    out = {}
    for name in os.listdir(save_dir):
        path = os.path.join(save_dir, name)
        if os.path.isfile(path) and name != LOCK_NAME:
            st = os.stat(path)
            out[name] = (st.st_size, st.st_mtime_ns)
    return out


def _assert_every_checkpoint_loads(save_dir):
    names = [n for n in _files(save_dir) if n.endswith(".pt")]
    assert "checkpoint_last.pt" in names, names
    for name in names:
        try:
            torch.load(os.path.join(save_dir, name), map_location="cpu", weights_only=False)
        except Exception as e:  # noqa: BLE001  (report which file, whatever broke)
            pytest.fail(f"{name} ({os.path.getsize(os.path.join(save_dir, name))} bytes) "
                        f"does not load: {e}")


def _updates(path):
    state = torch.load(path, map_location="cpu", weights_only=False)
    return state["optimizer_history"][-1]["num_updates"]


def _fault(save_dir, at, action, after=None):
    env = dict(FAULT_DIR=save_dir, FAULT_AT=at, FAULT_ACTION=action)
    if after:
        env["FAULT_AFTER"] = after
    return env


def test_install_is_idempotent():
    wrapped = (checkpoint_utils.torch_persistent_save, checkpoint_utils.PathManager,
               checkpoint_utils.load_checkpoint)
    assert all(getattr(w, "_uamix_safe", False) for w in wrapped)
    checkpoint_safety.install()
    assert (checkpoint_utils.torch_persistent_save, checkpoint_utils.PathManager,
            checkpoint_utils.load_checkpoint) == wrapped


def test_unreadable_last_checkpoint_falls_back_or_says_what_to_do(tmp_path, caplog):
    from types import SimpleNamespace

    from omegaconf import OmegaConf

    cfg = OmegaConf.create({"restore_file": "checkpoint_last.pt", "save_dir": str(tmp_path),
                            "finetune_from_model": None})
    trainer = SimpleNamespace(checkpoint_suffix="")
    last = tmp_path / "checkpoint_last.pt"
    assert checkpoint_safety._complete_fallback(cfg, trainer) is None  # first launch
    torch.save({"w": torch.zeros(3)}, last)
    assert checkpoint_safety._complete_fallback(cfg, trainer) is None  # complete
    last.write_bytes(last.read_bytes()[:50])
    with pytest.raises(checkpoint_safety.CheckpointUnreadableError,
                       match=f"{last} is unreadable .* Move {last} away"):
        checkpoint_safety._complete_fallback(cfg, trainer)
    torch.save({"w": torch.zeros(3)}, tmp_path / "checkpoint_1_3.pt")
    with caplog.at_level("WARNING"):
        fallback = checkpoint_safety._complete_fallback(cfg, trainer)
    assert fallback == str(tmp_path / "checkpoint_1_3.pt")
    assert f"{last} is unreadable" in caplog.text and f"resuming from {fallback}" in caplog.text
    # A restore_file the user chose is left to fairseq.
    cfg.restore_file = str(last)
    assert checkpoint_safety._complete_fallback(cfg, trainer) is None


def test_runs_stopped_while_saving_leave_complete_checkpoints(tmp_path):
    """Saves at updates 3, 6, 9. Run 1 gets SIGTERM as the update-6 checkpoint is copied
    to checkpoint_last.pt; run 2 resumes at update 3 and gets SIGKILL while it writes
    the update-6 checkpoint; run 3 meets a checkpoint_last.pt cut short (as a copy by
    fairseq itself leaves it) and resumes from the newest complete checkpoint."""
    corpus, ckpt = make_tiny_setup(str(tmp_path))
    save_dir = str(tmp_path / "ckpt")
    overrides = tiny_overrides(corpus, ckpt, save_dir, **{"optimization.max_update": 9})
    run = dict(cwd=str(tmp_path), script=FAULT_TRAIN)

    code, log = run_train(overrides, env=_fault(save_dir, "checkpoint_last", "TERM",
                                                after="checkpoint_1_6"), **run)
    assert code == -signal.SIGTERM, log[-3000:]
    assert "FAULT TERM after opening checkpoint_last" in log
    assert f"Finished saving checkpoint to {save_dir}/checkpoint_1_6.pt" in log
    _assert_every_checkpoint_loads(save_dir)

    code, log = run_train(overrides, env=_fault(save_dir, "checkpoint_1_6", "KILL"), **run)
    assert code == -signal.SIGKILL, log[-3000:]
    assert f"Loaded checkpoint {save_dir}/checkpoint_last.pt (epoch 1 @ 3 updates)" in log
    _assert_every_checkpoint_loads(save_dir)

    last = os.path.join(save_dir, "checkpoint_last.pt")
    with open(last, "r+b") as f:
        f.truncate(os.path.getsize(last) // 2)
    assert any(n.endswith(".tmp") for n in os.listdir(save_dir))  # left by the kills
    code, log = run_train(overrides, cwd=str(tmp_path))
    assert code == 0, log[-3000:]
    assert f"{last} is unreadable" in log and "resuming from" in log, log[-3000:]
    assert "(epoch 1 @ 6 updates)" in log  # checkpoint_1_6.pt or checkpoint_best.pt
    assert not [n for n in os.listdir(save_dir) if n.endswith(".tmp")]
    _assert_every_checkpoint_loads(save_dir)
    assert _updates(last) == 9


def test_second_run_into_the_same_save_dir_is_refused(tmp_path):
    corpus, ckpt = make_tiny_setup(str(tmp_path))
    save_dir = str(tmp_path / "ckpt")
    overrides = tiny_overrides(corpus, ckpt, save_dir)
    go = str(tmp_path / "go")
    # Run 1 pauses as it starts writing its first checkpoint (update 3).
    first = subprocess.Popen(
        train_command(overrides, script=FAULT_TRAIN), cwd=str(tmp_path),
        env=train_env(**_fault(save_dir, "checkpoint_1_3", f"WAIT:{go}")),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while not os.path.exists(go + ".waiting"):
            assert first.poll() is None, first.communicate()[0][-3000:]
            assert time.monotonic() < deadline, "run 1 never reached its first save"
            time.sleep(0.2)
        before = _files(save_dir)
        code, log = run_train(overrides, cwd=str(tmp_path))
        assert code != 0
        assert (f"checkpoint.save_dir {save_dir} is in use by another training run "
                f"(pid {first.pid} on host {socket.gethostname()}") in log, log[-3000:]
        assert _files(save_dir) == before  # the refused run touched nothing
    finally:
        open(go, "w").close()
        out = first.communicate(timeout=120)[0]
    assert first.returncode == 0, out[-3000:]
    assert _updates(os.path.join(save_dir, "checkpoint_last.pt")) == 6
    lock_folder(save_dir)  # the lock went with run 1
