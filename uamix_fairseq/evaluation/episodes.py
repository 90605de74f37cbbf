"""Seeded N-way k-shot episodes over single-label data.

An episode draws ``ways`` distinct classes, then, inside each class, ``shots`` support
and ``queries`` query clips without overlap. Episodes are lists of clip indices: they
depend only on the labels, the sizes and the seed, never on embeddings, so several
encoders evaluated with the same seed see exactly the same episodes.

Each (ways, shots, queries) setting has its own random stream,
``numpy.random.default_rng([seed, ways, shots, queries])``, so the 5-shot episodes of a
run with ``--shots 1 5 10`` are the same as those of a run with ``--shots 5`` alone.
"""

import warnings
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import EvaluationError

__all__ = ["Episode", "EpisodeError", "SmallClassWarning",
           "single_label_targets", "sample_episodes", "stack_episodes"]


class EpisodeError(EvaluationError):
    """Episodes cannot be drawn (too few classes, multi-label data, bad sizes)."""


class SmallClassWarning(UserWarning):
    """Some classes have too few clips for an episode and are left out."""



@dataclass(frozen=True)
class Episode:
    """One episode as clip indices into the label list (and the embedding matrix).

    ``classes[j]`` is the global class index of episode label ``j``; ``support`` and
    ``query`` are grouped by episode label (class 0's clips first), and
    ``support_labels`` / ``query_labels`` hold the episode labels 0..ways-1.
    """

    classes: np.ndarray         # [ways] global class indices
    support: np.ndarray         # [ways * shots] clip indices
    support_labels: np.ndarray  # [ways * shots] in 0..ways-1
    query: np.ndarray           # [ways * queries] clip indices
    query_labels: np.ndarray    # [ways * queries] in 0..ways-1


def single_label_targets(labels: Sequence[Sequence[str]], source: str = "the labels"
                         ) -> Tuple[List[str], np.ndarray]:
    """Sorted class names and the class index of every clip, for single-label data.

    Raises EpisodeError naming ``source`` and the first offending line when a clip has
    several labels (few-shot episodes need exactly one class per clip).
    """
    multi = [i for i, row in enumerate(labels) if len(row) != 1]
    if multi:
        first = multi[0]
        raise EpisodeError(
            f"{source}: few-shot episodes need one class per clip, but {len(multi)} "
            f"clip(s) have several (first: clip line {first + 1} has "
            f"{','.join(labels[first])}); use the probe command (one-vs-rest, mAP) "
            "for multi-label data")
    names = sorted({row[0] for row in labels})
    index = {c: i for i, c in enumerate(names)}
    return names, np.array([index[row[0]] for row in labels], dtype=np.int64)


def _check_sizes(ways: int, shots: int, queries: int, episodes: int):
    for name, value, low in (("ways", ways, 2), ("shots", shots, 1),
                             ("queries", queries, 1), ("episodes", episodes, 1)):
        if int(value) != value or value < low:
            raise EpisodeError(f"{name} must be an integer >= {low}, got {value!r}")


def sample_episodes(targets: Sequence[int], ways: int, shots: int, queries: int,
                    episodes: int, seed: int = 0,
                    class_names: Optional[Sequence[str]] = None,
                    source: str = "the data") -> List[Episode]:
    """Draw ``episodes`` episodes of ``ways`` classes x (``shots`` + ``queries``) clips.

    Args:
        targets: class index of every clip (e.g. from ``single_label_targets``).
        class_names: names for the messages (default: the indices).
        source: what the data is called in messages (e.g. the label file).

    Classes with fewer than ``shots + queries`` clips are left out with a
    ``SmallClassWarning`` naming each with its count. Raises ``EpisodeError`` when
    fewer than ``ways`` classes remain.
    """
    _check_sizes(ways, shots, queries, episodes)
    y = np.asarray(targets, dtype=np.int64)
    if y.ndim != 1 or y.size == 0:
        raise EpisodeError(f"{source}: no clips to draw episodes from")
    present = np.unique(y)
    name = (lambda c: str(class_names[c])) if class_names is not None else str
    need = shots + queries
    members: Dict[int, np.ndarray] = {int(c): np.flatnonzero(y == c) for c in present}
    small = {c: len(m) for c, m in members.items() if len(m) < need}
    kept = np.array([c for c in members if c not in small], dtype=np.int64)
    if small:
        listed = ", ".join(f"{name(c)} ({n})" for c, n in sorted(small.items()))
        warnings.warn(
            f"{source}: {len(small)} class(es) with fewer than shots + queries = "
            f"{shots} + {queries} = {need} clips are left out of the {ways}-way "
            f"{shots}-shot episodes: {listed}", SmallClassWarning, stacklevel=2)
    if len(kept) < ways:
        raise EpisodeError(
            f"{source}: {ways}-way {shots}-shot episodes with {queries} queries need "
            f"{ways} classes of at least {need} clips each, but only {len(kept)} of "
            f"{len(members)} classes have that many; lower --ways, --shots or "
            "--queries, or add clips")
    rng = np.random.default_rng([int(seed), int(ways), int(shots), int(queries)])
    out = []
    episode_labels_s = np.repeat(np.arange(ways), shots)
    episode_labels_q = np.repeat(np.arange(ways), queries)
    for _ in range(episodes):
        classes = rng.choice(kept, size=ways, replace=False)
        support, query = [], []
        for c in classes:
            drawn = rng.choice(members[int(c)], size=need, replace=False)
            support.append(drawn[:shots])
            query.append(drawn[shots:])
        out.append(Episode(classes=classes, support=np.concatenate(support),
                           support_labels=episode_labels_s,
                           query=np.concatenate(query), query_labels=episode_labels_q))
    return out


def stack_episodes(episodes: Sequence[Episode]) -> Dict[str, np.ndarray]:
    """The episodes' index arrays stacked to ``[E, ...]`` (all have the same sizes)."""
    return {
        "classes": np.stack([e.classes for e in episodes]),
        "support": np.stack([e.support for e in episodes]),
        "support_labels": np.stack([e.support_labels for e in episodes]),
        "query": np.stack([e.query for e in episodes]),
        "query_labels": np.stack([e.query_labels for e in episodes]),
    }
