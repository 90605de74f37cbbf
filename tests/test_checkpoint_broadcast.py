"""uamix_fairseq/tasks/checkpoint_broadcast.py: what fairseq's ``broadcast_object``
delivers to the other ranks, in one process. The sending and the receiving rank run
fairseq's own code in turn, with ``get_rank`` and the ``broadcast`` collective faked
by a list of the tensors rank 0 sent. (A real two-rank resume through the CPU launcher
is in test_distributed.py.)"""

import argparse
import pickle

import pytest
import torch
from fairseq import checkpoint_utils
from fairseq.distributed import utils as distributed_utils
from omegaconf import DictConfig, OmegaConf

import uamix_fairseq  # noqa: F401  (installs the wrappers)
from uamix_fairseq.tasks import checkpoint_broadcast

CPU = torch.device("cpu")


def _send_and_receive(monkeypatch, obj, broadcast_object=None):
    """(what rank 0 keeps, what rank 1 receives) of ``broadcast_object(obj)``."""
    broadcast_object = broadcast_object or distributed_utils.broadcast_object
    wire, rank = [], {"now": 0}

    def fake_broadcast(tensor, src, group):
        if rank["now"] == src:
            wire.append(tensor.clone())
        else:
            tensor.copy_(wire.pop(0).reshape(tensor.shape))  # receivers get it flat

    monkeypatch.setattr(distributed_utils, "get_rank", lambda group: rank["now"])
    monkeypatch.setattr(distributed_utils, "broadcast", fake_broadcast)
    kept = broadcast_object(obj, src_rank=0, group=None, dist_device=CPU)
    rank["now"] = 1
    received = broadcast_object(None, src_rank=0, group=None, dist_device=CPU)
    assert not wire
    return kept, received


@pytest.fixture
def restored_state(tmp_path):
    """What rank 0's trainer broadcasts: a checkpoint as fairseq saves it (plain cfg),
    read back by fairseq's own load_checkpoint_to_cpu (cfg becomes a DictConfig)."""
    path = tmp_path / "checkpoint_last.pt"
    torch.save({
        "cfg": {"common": {"seed": 1, "log_interval": "${optimization.max_update}"},
                "optimization": {"max_update": 6, "lr": [0.001]}, "model": {"_name": "m"}},
        "model": {"w": torch.arange(6.0).view(2, 3), "n": torch.tensor([3])},
        "optimizer_history": [{"num_updates": 3, "lr_scheduler_state": {"best": None}}],
        "extra_state": {"train_iterator": {"epoch": 2, "iterations_in_epoch": 0}},
        "last_optimizer_state": {"state": {0: {"step": torch.tensor(3.0)}}},
    }, path)
    return checkpoint_utils.load_checkpoint_to_cpu(str(path))


def test_install_is_idempotent():
    wrapped = distributed_utils.broadcast_object
    assert wrapped._uamix_safe
    checkpoint_broadcast.install()
    assert distributed_utils.broadcast_object is wrapped


def test_fairseq_alone_refuses_the_restored_state(monkeypatch, restored_state):
    """The bug: fairseq's broadcast_object, unwrapped, under torch's weights_only."""
    original = distributed_utils.broadcast_object.__closure__[0].cell_contents
    assert original.__module__ == "fairseq.distributed.utils"
    assert isinstance(restored_state["cfg"], DictConfig)
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        _send_and_receive(monkeypatch, restored_state, original)


def test_receiving_rank_gets_the_restored_state(monkeypatch, restored_state):
    kept, received = _send_and_receive(monkeypatch, restored_state)
    for state in kept, received:
        assert state.keys() == restored_state.keys()
        cfg = state["cfg"]
        # The same config as rank 0's load made: equal content, interpolations live,
        # the same flags.
        assert isinstance(cfg, DictConfig) and cfg == restored_state["cfg"]
        assert cfg.common.log_interval == 6
        assert cfg._get_flag("allow_objects") is True
        assert OmegaConf.to_container(cfg) == OmegaConf.to_container(restored_state["cfg"])
        assert torch.equal(state["model"]["w"], restored_state["model"]["w"])
        assert state["model"]["n"].dtype == torch.int64
        assert state["optimizer_history"] == restored_state["optimizer_history"]
        assert state["extra_state"] == restored_state["extra_state"]
        assert torch.equal(state["last_optimizer_state"]["state"][0]["step"],
                           torch.tensor(3.0))


def test_configs_in_lists_and_tuples_and_other_broadcasts(monkeypatch):
    obj = [OmegaConf.create([1, "${0}"]), ({"x": OmegaConf.create({"a": 1})},), 7,
           torch.ones(2)]
    _, received = _send_and_receive(monkeypatch, obj)
    assert OmegaConf.to_container(received[0], resolve=True) == [1, 1]
    assert received[1][0]["x"] == OmegaConf.create({"a": 1})
    assert received[2] == 7 and torch.equal(received[3], torch.ones(2))


def test_receiving_rank_still_refuses_other_classes(monkeypatch):
    """No wider than rank 0's weights_only load of the file: a class outside torch's
    allow-list (here argparse.Namespace, also inside a config) is refused."""
    for obj in ({"args": argparse.Namespace(lr=1.0)},
                {"cfg": OmegaConf.create({"ns": argparse.Namespace(lr=1.0)},
                                         flags={"allow_objects": True})}):
        with pytest.raises(pickle.UnpicklingError, match="argparse.Namespace"):
            _send_and_receive(monkeypatch, obj)
