"""Average precision, exact: used by the fine-tuning criterion (mAP on multi-label
sets) and by the evaluation tools (``evaluation.classifiers`` re-exports it)."""

from typing import Tuple

import numpy as np


def average_precision(y_true, scores) -> float:
    """AP of one class: ``sum_t (R_t - R_{t-1}) P_t`` over the distinct score thresholds
    ``t`` in decreasing order, where ``P_t``, ``R_t`` are the precision and recall of
    "score >= t". Tied scores form one threshold. NaN when there is no positive.
    """
    y = np.asarray(y_true).astype(bool).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"{y.size} labels but {s.size} scores")
    positives = int(y.sum())
    if positives == 0:
        return float("nan")
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    # Last position of every run of equal scores: one threshold per distinct score.
    ends = np.r_[np.flatnonzero(np.diff(s) != 0), s.size - 1]
    tp = np.cumsum(y)[ends].astype(np.float64)
    precision = tp / (ends + 1)
    recall = tp / positives
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def mean_average_precision(targets, scores) -> Tuple[float, np.ndarray]:
    """Mean AP over the classes that have a positive in ``targets`` [m, C], and the
    per-class APs ``[C]`` (NaN for classes without positives)."""
    t = np.asarray(targets)
    s = np.asarray(scores, dtype=np.float64)
    if t.shape != s.shape:
        raise ValueError(f"targets {t.shape} and scores {s.shape} differ")
    per_class = np.array([average_precision(t[:, c], s[:, c]) for c in range(t.shape[1])])
    valid = ~np.isnan(per_class)
    return (float(per_class[valid].mean()) if valid.any() else float("nan")), per_class
