"""The labelled monitor sets of every uamix task (``task.monitor_manifest``): fairseq glue
around ``uamix_fairseq.modules.monitor``.

At every validation (``trainer.begin_valid_epoch``) the task embeds the monitor clips
with the current encoder and keeps the scores; the first validation batch carries them
in its logging output, so that they are logged with the valid metrics (and to
tensorboard) as ``monitor_knn``, ``monitor_ncm`` and ``monitor_drift``, and
``checkpoint.best_checkpoint_metric=monitor_knn`` can choose ``checkpoint_best.pt``.
``task.monitor_manifest`` may list several manifests, comma-separated: the first gives
those keys, every further one the same keys suffixed with its file stem
(``monitor_knn_speakers`` for ``.../speakers.tsv``), so that one run shows what it gains
on each kind of sound. The embeddings of the encoder the run started from are saved in
the task state, so the drift is measured against the same start after a resume.
"""

import logging
import os
import re
import time
from typing import List, Tuple

import torch
from fairseq.logging import metrics

from ..audio.frontend import batch_fbank, model_input
from ..models.wrappers import find_uamix_model
from ..modules.monitor import (MonitorError, embed_batches, knn_k_warning, monitor_scores,
                       targets_from_labels)

logger = logging.getLogger(__name__)

MONITOR_KEYS = ("monitor_knn", "monitor_ncm", "monitor_drift", "monitor_seconds")


def _encoder_and_pooling(model):
    inner = find_uamix_model(model)
    encoder = getattr(inner, "encoder", None)
    if encoder is None or not hasattr(encoder, "embed"):
        raise MonitorError(f"task.monitor_manifest: model {type(inner).__name__} has no "
                           "AudioMAE encoder to embed the monitor clips with")
    return encoder, getattr(getattr(inner, "cfg", None), "pooling", "mean")


def monitor_sets(spec: str) -> List[Tuple[str, str]]:
    """``(manifest path, key suffix)`` of each set of a ``task.monitor_manifest`` value:
    comma-separated paths; the first set's suffix is empty, the others' ``_<file stem>``."""
    paths = [p.strip() for p in spec.split(",") if p.strip()]
    stems = [re.sub(r"[^A-Za-z0-9_]", "_", os.path.splitext(os.path.basename(p))[0])
             for p in paths]
    for i, stem in enumerate(stems):
        if stem in stems[:i]:
            raise MonitorError(f"task.monitor_manifest: {paths[stems.index(stem)]} and "
                               f"{paths[i]} have the same file name, so their scores would "
                               "share a key; give each monitor manifest its own name")
    return [(p, "" if i == 0 else "_" + stem) for i, (p, stem) in enumerate(zip(paths, stems))]


def load_monitor_inputs(cfg, frontend, path=None):
    """(model inputs [N, 1, T, F] on CPU, targets [N], class names) of a monitor
    manifest (default: the first of ``cfg.monitor_manifest``): clips cropped from their
    start, as the evaluation tools embed them."""
    from ..data.audio_dataset import AudioClipDataset
    from ..labels import label_path_for, read_labels

    path = path or monitor_sets(cfg.monitor_manifest)[0][0]
    if not os.path.isfile(path):
        raise MonitorError(f"task.monitor_manifest={path} does not exist (a manifest with "
                           "its labels in PATH.label beside it; empty switches it off)")
    label_path = label_path_for(path)
    names, targets = targets_from_labels(read_labels(path, label_path), label_path)
    ds = AudioClipDataset(path, max_samples=frontend.max_samples,
                          sample_rate=cfg.sample_rate, resample=cfg.resample,
                          random_crop=False)
    chunks = []
    for start in range(0, len(ds), 64):
        batch = ds.collater([ds[i] for i in range(start, min(start + 64, len(ds)))])
        net = batch["net_input"]
        fbank, _ = batch_fbank(net["waveform"], net["lengths"], frontend)
        chunks.append(model_input(fbank, frontend).float())
    inputs = torch.cat(chunks)
    logger.info("monitor set %s: %d clips of %d classes (%.0f MB of features in memory)",
                path, len(ds), len(names), inputs.numel() * 4 / 2**20)
    return inputs, targets, names


class MonitorMixin:
    """Mixed into the uamix tasks before ``FairseqTask``; call ``_init_monitor()`` in
    ``__init__`` and pass each ``valid_step``'s logging output through
    ``add_monitor_scores``. Needs ``self.cfg`` (an ``AudioDataConfig``) and
    ``self.frontend_cfg``. The starting embeddings are the task's checkpoint state, so
    that drift is measured from the same start after a restart."""

    def _init_monitor(self):
        self._monitor_sets = monitor_sets(self.cfg.monitor_manifest)
        self._monitor = None  # [(inputs, targets)] per set, loaded on first use
        self.monitor_start = None  # [[N, D] embeddings of the starting encoder] per set
        self._monitor_pending = None  # scores waiting for the first valid batch
        if self._monitor_sets and self.cfg.monitor_knn_k < 1:
            raise ValueError(f"task.monitor_knn_k must be >= 1, got {self.cfg.monitor_knn_k}")

    @property
    def monitor_enabled(self) -> bool:
        return bool(self._monitor_sets)

    def _monitor_embed(self, model) -> List[torch.Tensor]:
        if self._monitor is None:
            self._monitor = [load_monitor_inputs(self.cfg, self.frontend_cfg, path)[:2]
                             for path, _ in self._monitor_sets]
            for (path, _), (_, targets) in zip(self._monitor_sets, self._monitor):
                warning = knn_k_warning(targets, self.cfg.monitor_knn_k, path)
                if warning:
                    logger.warning(warning)
        encoder, pooling = _encoder_and_pooling(model)
        return [embed_batches(encoder, inputs, pooling, self.cfg.monitor_batch_size,
                              encoder.cls_token.device) for inputs, _ in self._monitor]

    def build_model(self, cfg, from_checkpoint=False):
        model = super().build_model(cfg, from_checkpoint)
        if self.monitor_enabled and self.monitor_start is None:
            self.monitor_start = self._monitor_embed(model)
        return model

    def _monitor_state_dict(self) -> dict:
        starts = self.monitor_start
        if not starts:
            return {}
        state = {"monitor_start": starts[0]}
        if len(starts) > 1:
            state["monitor_start_more"] = list(starts[1:])
        return state

    def _load_monitor_state(self, state_dict):
        if state_dict.get("monitor_start") is not None:
            self.monitor_start = [state_dict["monitor_start"],
                                  *state_dict.get("monitor_start_more", [])]

    def state_dict(self):
        return self._monitor_state_dict()

    def load_state_dict(self, state_dict):
        self._load_monitor_state(state_dict)

    def begin_valid_epoch(self, epoch, model):
        super().begin_valid_epoch(epoch, model)
        if not self.monitor_enabled:
            return
        t0 = time.perf_counter()
        embs = self._monitor_embed(model)
        starts = list(self.monitor_start or [])
        starts += [None] * (len(embs) - len(starts))
        scores = {}
        for i, ((path, suffix), emb, (_, targets)) in enumerate(
                zip(self._monitor_sets, embs, self._monitor)):
            start = starts[i]
            if start is None or start.shape != emb.shape:
                logger.warning("monitor %s: no saved start embeddings of shape %s (monitor "
                               "set changed?); drift is measured from now on", path,
                               tuple(emb.shape))
                start = starts[i] = emb
            one = monitor_scores(emb, targets, self.cfg.monitor_knn_k, start)
            logger.info("monitor %s (%d clips): k-NN %.2f%%, NCM %.2f%%, drift %.4f",
                        os.path.basename(path), emb.shape[0], one["monitor_knn"],
                        one["monitor_ncm"], one.get("monitor_drift", 0.0))
            scores.update({key + suffix: value for key, value in one.items()})
        self.monitor_start = starts
        scores["monitor_seconds"] = time.perf_counter() - t0
        self._monitor_pending = scores
        logger.info("monitor: %d set(s) scored in %.1f s", len(embs), scores["monitor_seconds"])

    def add_monitor_scores(self, logging_output: dict) -> dict:
        """Put the pending scores into the first validation batch's logging output."""
        if self._monitor_pending is not None:
            logging_output = dict(logging_output)
            for key, value in self._monitor_pending.items():
                logging_output[key + "_sum"] = value
            logging_output["monitor_count"] = 1
            self._monitor_pending = None
        return logging_output

    def reduce_metrics(self, logging_outputs, criterion):
        super().reduce_metrics(logging_outputs, criterion)
        # Each rank scores the whole monitor set, so the sums over ranks divided by the
        # number of ranks that reported are the scores themselves.
        count = sum(log.get("monitor_count", 0) for log in logging_outputs)
        if not count:
            return
        keys = sorted({k[:-len("_sum")] for log in logging_outputs for k in log
                       if k.startswith("monitor_") and k.endswith("_sum")},
                      key=lambda k: (k not in MONITOR_KEYS, k))
        for key in keys:
            total = sum(float(log.get(key + "_sum", 0.0)) for log in logging_outputs)
            metrics.log_scalar(key, total / count, count,
                               round=3 if key.startswith("monitor_drift") else 2)
