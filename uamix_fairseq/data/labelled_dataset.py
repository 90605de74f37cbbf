"""Labelled clips for supervised fine-tuning: the clips of a manifest (the project's one
data path, ``AudioClipDataset``) with the classes of ``<split>.label`` beside it.

Targets are collated as a multi-hot matrix ``[B, C]`` of bools, whether a clip has one
class or several: the task turns it into float targets on the device (and mixes them
under mixup), the criterion reads single-label targets as one-hot rows. Bools are left
alone by fairseq's fp16/bf16 sample cast.
"""

from typing import List, Sequence

import torch

from ..labels import LabelError, label_path_for, read_labels
from .audio_dataset import AudioClipDataset


def class_indices(labels: Sequence[Sequence[str]], classes: Sequence[str], label_path: str,
                  multilabel: bool) -> List[List[int]]:
    """Class indices of every clip; errors name the file, the line and the class."""
    index = {c: i for i, c in enumerate(classes)}
    out = []
    for line, names in enumerate(labels, start=1):
        unknown = [c for c in names if c not in index]
        if unknown:
            shown = ", ".join(classes[:10]) + (" ..." if len(classes) > 10 else "")
            raise LabelError(
                f"{label_path}:{line}: class {unknown[0]!r} is not one of the "
                f"{len(classes)} classes of the training split ({shown}); a classifier "
                "can only be evaluated on classes it was trained on"
            )
        if not multilabel and len(names) > 1:
            raise LabelError(
                f"{label_path}:{line}: {len(names)} classes ({','.join(names)}) for a "
                "single-label task; set task.multilabel=true for multi-label data"
            )
        out.append(sorted({index[c] for c in names}))
    return out


class LabelledClipDataset(AudioClipDataset):
    """``AudioClipDataset`` plus a ``target`` [B, C] (bool, multi-hot) in every batch."""

    def __init__(self, manifest_path, classes: Sequence[str], multilabel: bool,
                 label_path=None, **clip_kwargs):
        super().__init__(manifest_path, **clip_kwargs)
        self.label_path = label_path or label_path_for(manifest_path)
        self.classes = list(classes)
        self.multilabel = multilabel
        self.targets = class_indices(read_labels(manifest_path, self.label_path),
                                     self.classes, self.label_path, multilabel)

    def batch_by_size(self, indices, max_tokens=None, max_sentences=None,
                      required_batch_size_multiple=1):
        # fairseq's batch_by_size drops the clips left over after the last full multiple
        # when required_batch_size_multiple > 1 (fairseq-validate's default is 8): an
        # evaluation would silently skip clips. Fixed-size clips need no multiple.
        return super().batch_by_size(indices, max_tokens, max_sentences, 1)

    def collater(self, samples):
        batch = super().collater(samples)  # drops skipped clips
        if not batch:
            return batch
        target = torch.zeros(len(batch["id"]), len(self.classes), dtype=torch.bool)
        for row, i in enumerate(batch["id"].tolist()):
            target[row, self.targets[i]] = True
        batch["target"] = target
        return batch
