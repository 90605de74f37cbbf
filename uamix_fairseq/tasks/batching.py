"""Batches for tasks whose model needs at least two clips in every batch (the head's
BatchNorm in training, and a contrastive loss, which with one clip has no negative).

- ``check_clip_count`` and ``check_batch_size`` refuse, at start-up, a manifest or a
  batch size that cannot give such batches, naming the file or the field.
- A batch that skipping bad audio leaves too small is dropped by the dataset's collater
  (an empty batch). fairseq's trainer then runs its dummy batch instead, with the loss
  multiplied by 0, and ``all_batches_dropped`` lets the task's optimizer step leave the
  weights unchanged. ``usable_first_batch`` makes sure that dummy batch (fairseq takes
  the first batch of the epoch) is not itself an empty one, which fairseq cannot run.
"""

from fairseq.data.iterators import EpochBatchIterator

from ..manifest import MIN_CLIPS  # one rule for valid splits and batches


def _why(task_name: str) -> str:
    return (f"task {task_name} needs at least {MIN_CLIPS} clips per batch (the head's "
            "BatchNorm and the contrastive loss)")


def check_clip_count(dataset, split: str, task_name: str):
    """A clear error, naming the manifest, when ``split`` has too few clips."""
    if len(dataset) < MIN_CLIPS:
        raise ValueError(f"{dataset.manifest_path} lists {len(dataset)} clip(s), but "
                         f"{_why(task_name)}: add clips to it (split '{split}')")


def check_batch_size(split: str, max_sentences, task_name: str):
    """A clear error, naming the field, when the batch size is below MIN_CLIPS."""
    field = "dataset.batch_size" if split == "train" else "dataset.batch_size_valid"
    if max_sentences is not None and max_sentences < MIN_CLIPS:
        raise ValueError(f"{field}={max_sentences}: {_why(task_name)}; set "
                         f"{field}={MIN_CLIPS} or more")


class _UsableFirstBatchIterator(EpochBatchIterator):
    """fairseq's iterator, except that ``first_batch`` is the first batch that still
    holds clips after bad audio was skipped."""

    @property
    def first_batch(self):
        for batch in self.frozen_batches:
            sample = self.collate_fn([self.dataset[i] for i in batch])
            if sample:
                return sample
        raise ValueError(
            f"{self.dataset.manifest_path}: no batch has {MIN_CLIPS} readable clips "
            "(task.skip_bad_audio skipped the others); check the audio files it logged")


def usable_first_batch(iterator):
    """``iterator`` (from FairseqTask.get_batch_iterator) with a ``first_batch`` that
    is never empty: fairseq runs that batch as its dummy batch whenever a batch is
    empty, and an empty dummy batch stops training ("Invalid dummy batch")."""
    if type(iterator) is EpochBatchIterator:  # same object, one property different
        iterator.__class__ = _UsableFirstBatchIterator
    return iterator


class DroppedBatchTracker:
    """Counts the real (not dummy) batches of the current update on this rank."""

    def __init__(self):
        self._update = None
        self._real = 0

    def step(self, update_num: int, is_dummy: bool):
        if update_num != self._update:
            self._update, self._real = update_num, 0
        self._real += 0 if is_dummy else 1

    def all_batches_dropped(self, model) -> bool:
        """True when no rank had a real batch in this update: this rank had none, and
        the gradients (already summed over ranks) are all zero."""
        if self._real > 0:
            return False
        return all(p.grad is None or not p.grad.any() for p in model.parameters())
