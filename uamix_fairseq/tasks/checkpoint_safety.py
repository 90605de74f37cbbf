"""Safe checkpoints for the plugin's fairseq runs, without a fork of fairseq.

``install()`` (called when the plugin is imported, which fairseq does through
``common.user_dir`` before it builds the trainer) wraps three things in
``fairseq.checkpoint_utils``, once per process:

1. ``torch_persistent_save``, which ``Trainer.save_checkpoint`` calls to write
   ``checkpoint_E_U.pt`` (or whichever file is saved first). fairseq writes
   ``<file>.tmp`` and renames it, but never fsyncs it. The wrapper writes
   ``<file>.<pid>.tmp``, fsyncs it and ``os.replace``s it over the file.
2. ``PathManager.copy`` as seen by ``save_checkpoint``, which copies that file to
   ``checkpoint_best.pt`` / ``checkpoint_last.pt``. Without iopath this is
   ``shutil.copyfile``, which rewrites the destination in place: a run stopped in that
   window leaves a truncated ``checkpoint_last.pt`` that the next run cannot load.
   ``checkpoint_utils.PathManager`` becomes a subclass whose ``copy`` writes a
   temporary file and renames it; the rest of fairseq keeps its own ``PathManager``.
3. ``load_checkpoint``, which ``fairseq_cli.train.main`` calls once, after building the
   trainer and before training. Before fairseq's own code runs: global rank 0 locks
   ``checkpoint.save_dir`` (a second run into the same folder stops with an error
   naming the first) and removes the ``checkpoint*.tmp`` files a stopped run left
   there; an unreadable ``checkpoint_last.pt`` is reported and the newest complete
   checkpoint in ``save_dir`` restored instead. After it: a run whose restored
   checkpoint already reached ``optimization.max_update`` (or ``max_epoch``) logs that
   it is finished and exits with status 0, before training or writing anything
   (fairseq would train one more update and save again).

Remote (PathManager) paths and asynchronous writes go to fairseq unchanged. The file
work itself is in ``uamix_fairseq.tasks.checkpoint_files`` and ``uamix_fairseq.tasks.run_lock``.
"""

import logging
import math
import os
import sys

from fairseq import checkpoint_utils
from fairseq.distributed import utils as distributed_utils
from fairseq.file_io import PathManager
from omegaconf import open_dict

from .checkpoint_files import (
    atomic_copy, atomic_save, is_complete, newest_complete_checkpoint,
    remove_stale_temporaries,
)
from .run_lock import lock_folder

logger = logging.getLogger(__name__)

DEFAULT_RESTORE = "checkpoint_last.pt"  # fairseq's default checkpoint.restore_file


class CheckpointUnreadableError(RuntimeError):
    """checkpoint_last.pt is unreadable and nothing complete can replace it."""


def _is_local(*paths) -> bool:
    return all(isinstance(p, str) and not PathManager.path_requires_pathmanager(p)
               for p in paths)


def _wrap_persistent_save(original):
    def torch_persistent_save(obj, filename, async_write: bool = False):
        if async_write or not _is_local(filename):
            return original(obj, filename, async_write=async_write)
        atomic_save(obj, filename)

    torch_persistent_save._uamix_safe = True
    return torch_persistent_save


class _AtomicCopyPathManager(PathManager):
    """fairseq's PathManager whose local ``copy`` never leaves a partial destination."""

    _uamix_safe = True

    @staticmethod
    def copy(src_path: str, dst_path: str, overwrite: bool = False) -> bool:
        if not overwrite or not _is_local(src_path, dst_path):
            return PathManager.copy(src_path, dst_path, overwrite=overwrite)
        atomic_copy(src_path, dst_path)
        return True


def _restore_path(cfg, trainer):
    """The file fairseq's load_checkpoint will restore, as it computes it (for the
    messages; a finetune_from_model start resets the update count anyway)."""
    if cfg.restore_file != DEFAULT_RESTORE:
        return cfg.restore_file
    last = os.path.join(cfg.save_dir, f"checkpoint_last{trainer.checkpoint_suffix}.pt")
    if not os.path.exists(last) and getattr(cfg, "continue_once", None) is not None:
        return cfg.continue_once
    return last


def _complete_fallback(cfg, trainer):
    """None if fairseq may restore as usual; else the newest complete checkpoint to
    restore instead of an unreadable checkpoint_last.pt."""
    if cfg.restore_file != DEFAULT_RESTORE or trainer.checkpoint_suffix:
        return None  # a file the user chose (fairseq reports it), or sharded checkpoints
    last = os.path.join(cfg.save_dir, "checkpoint_last.pt")
    if not os.path.exists(last) or is_complete(last):
        return None
    fallback = newest_complete_checkpoint(cfg.save_dir, exclude={os.path.basename(last)})
    if fallback is None:
        raise CheckpointUnreadableError(
            f"{last} is unreadable (cut short while it was written?) and "
            f"checkpoint.save_dir {cfg.save_dir} holds no complete checkpoint to resume "
            f"from instead. Move {last} away to train from the start.")
    logger.warning(
        f"{last} is unreadable (cut short while it was written, probably by a stopped "
        f"run); resuming from {fallback}, the newest complete checkpoint in "
        f"{cfg.save_dir}")
    return fallback


def _exit_if_finished(trainer, epoch_itr, restored):
    """Exit 0 if the restored state already reached max_update or max_epoch."""
    optimization = trainer.cfg.optimization
    updates = trainer.get_num_updates()
    max_epoch = optimization.max_epoch or math.inf
    if optimization.max_update and updates >= optimization.max_update:
        reached = f"optimization.max_update={optimization.max_update}"
        longer = "raise optimization.max_update"
    elif epoch_itr.next_epoch_idx > max_epoch:
        reached = f"optimization.max_epoch={optimization.max_epoch}"
        longer = "raise optimization.max_epoch"
    else:
        return
    logger.info(
        f"This run is finished: {restored} is at update {updates} (epoch "
        f"{epoch_itr.epoch}), which already reaches {reached}. No update was trained and no "
        f"checkpoint written. To train longer, {longer}; the run then resumes from this "
        "checkpoint.")
    sys.exit(0)


def _wrap_load_checkpoint(original):
    def load_checkpoint(cfg, trainer, **passthrough_args):
        if distributed_utils.is_master(trainer.cfg.distributed_training):
            lock_folder(cfg.save_dir)
            for path in remove_stale_temporaries(cfg.save_dir):
                logger.info(f"removed {path}, left by a run stopped while saving")
        fallback = _complete_fallback(cfg, trainer)
        restored = fallback or _restore_path(cfg, trainer)
        if fallback is None:
            extra_state, epoch_itr = original(cfg, trainer, **passthrough_args)
        else:
            # Restore the fallback as a user-chosen restore_file; put the config back
            # afterwards, since later checkpoints save it.
            saved = cfg.restore_file, cfg.finetune_from_model
            with open_dict(cfg):
                cfg.restore_file, cfg.finetune_from_model = fallback, None
            try:
                extra_state, epoch_itr = original(cfg, trainer, **passthrough_args)
            finally:
                with open_dict(cfg):
                    cfg.restore_file, cfg.finetune_from_model = saved
        if extra_state is not None:
            _exit_if_finished(trainer, epoch_itr, restored)
        return extra_state, epoch_itr

    load_checkpoint._uamix_safe = True
    return load_checkpoint


def install() -> None:
    """Wrap fairseq's checkpoint functions (see the module docstring); idempotent."""
    if not getattr(checkpoint_utils.torch_persistent_save, "_uamix_safe", False):
        checkpoint_utils.torch_persistent_save = _wrap_persistent_save(
            checkpoint_utils.torch_persistent_save)
    if not getattr(checkpoint_utils.PathManager, "_uamix_safe", False):
        checkpoint_utils.PathManager = _AtomicCopyPathManager
    if not getattr(checkpoint_utils.load_checkpoint, "_uamix_safe", False):
        checkpoint_utils.load_checkpoint = _wrap_load_checkpoint(
            checkpoint_utils.load_checkpoint)
