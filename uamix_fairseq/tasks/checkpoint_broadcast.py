"""Resuming with several data-parallel ranks under torch's ``weights_only`` loading.

fairseq's ``Trainer.load_checkpoint`` reads the checkpoint on rank 0 only
(``checkpoint_utils.load_checkpoint_to_cpu``) and sends the state to the other ranks
with ``fairseq.distributed.utils.broadcast_object``. That function takes the tensors
out (replacing each by a ``_TensorPlaceholder``), ``torch.save``s the rest into a
buffer, and the receiving ranks ``torch.load`` it with torch's default
``weights_only=True`` (torch >= 2.6). They refuse it: the placeholders are not on
torch's allow-list, nor is the ``DictConfig`` that rank 0 made of the checkpoint's
``cfg``. Every resume with two or more ranks crashed there, on gloo and NCCL alike.

``install()`` (called when the plugin is imported) wraps ``broadcast_object`` in
``fairseq.distributed.utils``, once per process, so that the receiving ranks build the
same state as rank 0 from the same kind of data rank 0 read:

- Rank 0 sends each omegaconf container (``DictConfig``/``ListConfig``) found in the
  dicts, lists and tuples of the object as a ``_PlainConfig``: its
  ``OmegaConf.to_container(resolve=False)`` (plain dicts, lists, strings and numbers,
  interpolations kept as strings) and its root flags. Every rank, rank 0 included,
  then turns it back into a container with ``OmegaConf.create(content, flags=flags)``,
  as ``load_checkpoint_to_cpu`` made it from the file's plain ``cfg`` (there with
  ``flags={"allow_objects": True}``). So all ranks hold equal configs.
- The receiving ranks load the buffer with ``weights_only=True`` and torch's default
  allow-list, the same as rank 0's ``torch.load`` of the checkpoint file, plus exactly
  two classes: fairseq's ``_TensorPlaceholder`` and this module's ``_PlainConfig``.
  Both are frozen dataclasses of plain fields (an int; a container and a dict):
  unpickling one only creates the object and sets its fields, it calls nothing
  else. No omegaconf class is unpickled, and nothing is loaded with
  ``weights_only=False``, so the other ranks accept no more than rank 0's own load of
  the file does: a buffer holding anything else is still refused.

The other users of ``broadcast_object`` (fairseq's sharded optimizer state and FSDP)
go through the same wrapper; they send no omegaconf containers and only gain the
placeholder on the allow-list, which they need as well.
"""

from dataclasses import dataclass
from typing import Any

import torch
from fairseq.distributed import utils as distributed_utils
from omegaconf import OmegaConf


@dataclass(frozen=True)
class _PlainConfig:
    """An omegaconf container in transit: its plain content and its root flags."""

    content: Any
    flags: dict


def _map_leaves(obj, fn):
    """``obj`` with ``fn`` applied to everything that is not a dict, list or tuple
    (the same walk as fairseq's tensor split)."""
    if isinstance(obj, dict):
        return {k: _map_leaves(v, fn) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_map_leaves(v, fn) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_map_leaves(v, fn) for v in obj)
    return fn(obj)


def _to_plain(obj):
    """``obj`` with every omegaconf container replaced by a ``_PlainConfig``."""
    return _map_leaves(obj, lambda x: _PlainConfig(OmegaConf.to_container(x, resolve=False),
                                                   dict(x._metadata.flags or {}))
                       if OmegaConf.is_config(x) else x)


def _from_plain(obj):
    """Undo ``_to_plain``."""
    return _map_leaves(obj, lambda x: OmegaConf.create(x.content, flags=x.flags)
                       if isinstance(x, _PlainConfig) else x)


def _wrap_broadcast_object(original):
    def broadcast_object(obj, src_rank, group, dist_device=None):
        if distributed_utils.get_rank(group) == src_rank:
            obj = _to_plain(obj)
        # Only the receiving ranks load anything inside (the buffers rank 0 sent).
        with torch.serialization.safe_globals(
                [distributed_utils._TensorPlaceholder, _PlainConfig]):
            obj = original(obj, src_rank, group, dist_device)
        return _from_plain(obj)

    broadcast_object._uamix_safe = True
    return broadcast_object


def install() -> None:
    """Wrap fairseq's ``broadcast_object`` (see the module docstring); idempotent."""
    if not getattr(distributed_utils.broadcast_object, "_uamix_safe", False):
        distributed_utils.broadcast_object = _wrap_broadcast_object(
            distributed_utils.broadcast_object)
