"""uamix_fairseq/tasks/checkpoint_files.py: atomic save and copy, completeness, the newest
complete checkpoint, stale temporaries."""

import os
import stat

import pytest
import torch

from uamix_fairseq.tasks.checkpoint_files import (
    _write_atomically, atomic_copy, atomic_save, is_complete, newest_complete_checkpoint,
    remove_stale_temporaries,
)


def _state(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"model": {"w": torch.randn(64, 64, generator=g)}, "cfg": {"seed": seed}}


def test_atomic_save_and_copy_round_trip(tmp_path):
    path, copy = str(tmp_path / "checkpoint_1_3.pt"), str(tmp_path / "checkpoint_last.pt")
    atomic_save(_state(1), path)
    atomic_copy(path, copy)
    for p in (path, copy):
        torch.testing.assert_close(torch.load(p)["model"]["w"], _state(1)["model"]["w"])
    assert open(path, "rb").read() == open(copy, "rb").read()
    assert sorted(os.listdir(tmp_path)) == ["checkpoint_1_3.pt", "checkpoint_last.pt"]
    # Permissions follow the umask, like a plain open() (no private 0600 temp files).
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(os.stat(copy).st_mode) == 0o666 & ~umask


def test_interrupted_write_keeps_the_old_file(tmp_path):
    path = str(tmp_path / "checkpoint_last.pt")
    atomic_save(_state(1), path)
    old = open(path, "rb").read()

    def half_then_stop(f):
        f.write(old[: len(old) // 2])
        raise KeyboardInterrupt  # as Ctrl-C or SIGTERM-turned-exception mid-write

    with pytest.raises(KeyboardInterrupt):
        _write_atomically(path, half_then_stop)
    assert open(path, "rb").read() == old
    assert os.listdir(tmp_path) == ["checkpoint_last.pt"]  # the temporary file is gone


def test_is_complete_rejects_every_cut(tmp_path):
    path = tmp_path / "checkpoint_last.pt"
    torch.save(_state(), path)
    data = path.read_bytes()
    assert is_complete(str(path))
    for keep in (0, 1, len(data) // 3, len(data) // 2, len(data) - 22, len(data) - 1):
        cut = tmp_path / f"cut{keep}.pt"
        cut.write_bytes(data[:keep])
        assert not is_complete(str(cut)), keep
        with pytest.raises(Exception):
            torch.load(cut)  # what fairseq's resume would meet
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    assert not is_complete(str(garbage))
    assert not is_complete(str(tmp_path / "missing.pt"))


def test_newest_complete_checkpoint_skips_cut_and_excluded_files(tmp_path):
    def write(name, when, cut=False):
        p = tmp_path / name
        torch.save(_state(), p)
        if cut:
            p.write_bytes(p.read_bytes()[:100])
        os.utime(p, (when, when))
        return str(p)

    write("checkpoint_1_3.pt", 1000)
    best = write("checkpoint_best.pt", 2000)
    write("checkpoint_1_6.pt", 3000, cut=True)
    write("checkpoint_last.pt", 4000)
    write("other.pt", 5000)  # not a checkpoint name
    assert newest_complete_checkpoint(str(tmp_path), exclude={"checkpoint_last.pt"}) == best
    assert newest_complete_checkpoint(str(tmp_path)).endswith("checkpoint_last.pt")
    assert newest_complete_checkpoint(str(tmp_path / "missing")) is None


def test_remove_stale_temporaries_only_removes_checkpoint_temporaries(tmp_path):
    names = ["checkpoint_last.pt", "checkpoint_last.pt.123.tmp", "checkpoint_1_3.pt.tmp",
             "notes.tmp", "checkpoint_best.pt"]
    for n in names:
        (tmp_path / n).write_bytes(b"x")
    removed = remove_stale_temporaries(str(tmp_path))
    assert [os.path.basename(p) for p in removed] == ["checkpoint_1_3.pt.tmp",
                                                      "checkpoint_last.pt.123.tmp"]
    assert sorted(os.listdir(tmp_path)) == ["checkpoint_best.pt", "checkpoint_last.pt",
                                            "notes.tmp"]
