"""Classifiers on frozen clip embeddings, and average precision.

All few-shot classifiers take a batch of episodes at once: ``support`` ``[E, n, D]``,
``support_labels`` ``[E, n]`` (integers in ``0..num_classes-1``) and ``query``
``[E, m, D]``, and return predicted labels ``[E, m]``. 2-D inputs (one episode, or a
whole training set) are accepted and give 1-D predictions.

- ``ncm_predict``: nearest class mean with cosine similarity. Embeddings are
  L2-normalised, each class mean is the mean of its normalised support embeddings, and a
  query gets the class of highest cosine similarity to a mean (exact ties: the lower
  class index).
- ``logreg_predict`` / ``fit_logreg``: multinomial logistic regression on standardised
  features: z-scored per feature with given statistics (the few-shot command uses the
  mean and standard deviation of all clips of the evaluated manifest, labels unused,
  see ``standardizer``) or with the training rows' own (the probe's training split).
  A constant feature gets standard deviation 1. Regularisation follows scikit-learn's
  ``LogisticRegression`` convention: minimise ``0.5 * ||W||^2 + C * sum_i CE_i`` with an
  unpenalised intercept and ``C = 1`` by default (larger C = weaker penalty). It is
  solved in float64 with torch's L-BFGS (gradient tolerance 1e-6), all episodes of a
  batch at once (their objectives are independent, so the sum has the same
  minimisers), and with fewer support clips than dimensions exactly in the span of the
  support set (n unknowns per class instead of D). Measured in CPU time, one thread,
  D = 768, 200 episodes: 0.2 / 0.7 / 0.3 / 6 ms per episode for 5-way 1-shot / 5-way
  5-shot / 10-way 1-shot / 10-way 10-shot, against 16 / 16 / 29 / 34 ms for
  ``sklearn.linear_model.LogisticRegression`` fitted per episode to the same precision
  (4-8 ms at its default tolerance, where 2-4% of the 1-shot predictions still differ
  from the optimum's); the weights agree with scikit-learn's to about 1e-5 (checked in
  the tests).
- ``knn_predict``: k-nearest neighbours by cosine similarity, majority vote. Ties are
  broken deterministically: neighbours are ranked by similarity, then by lower support
  index; among classes with the same number of votes the one whose best-ranked
  neighbour comes first wins (for k = 1 this is plain nearest neighbour).
- ``fit_ovr_logreg``: one-vs-rest binary logistic regression for multi-label data
  (same objective per class, same standardisation); ``knn_scores`` gives the fraction
  of the k neighbours carrying each class.
- ``average_precision`` / ``mean_average_precision``: AP as the precision-weighted sum of
  recall steps over the distinct score thresholds (tied scores form one threshold), the
  definition scikit-learn's ``average_precision_score`` uses.
"""

import contextlib
import warnings
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np
import torch

from ..modules.average_precision import average_precision, mean_average_precision  # noqa: F401

__all__ = [
    "CLASSIFIERS",
    "LogRegModel",
    "average_precision",
    "fit_logreg",
    "fit_ovr_logreg",
    "knn_neighbours",
    "knn_predict",
    "knn_scores",
    "l2_normalize",
    "logreg_predict",
    "mean_average_precision",
    "multi_hot",
    "ncm_predict",
    "standardizer",
]

CLASSIFIERS = ("ncm", "logreg", "knn")


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


def _batched(support, support_labels, query):
    """Add the episode axis to 2-D inputs; return (S, Ys, Q, was_2d)."""
    support = np.asarray(support)
    query = np.asarray(query)
    support_labels = np.asarray(support_labels, dtype=np.int64)
    single = support.ndim == 2
    if single:
        support, support_labels, query = support[None], support_labels[None], query[None]
    if support.ndim != 3 or query.ndim != 3 or support_labels.shape != support.shape[:2]:
        raise ValueError(
            f"expected support [E, n, D], labels [E, n], query [E, m, D]; got "
            f"{support.shape}, {support_labels.shape}, {query.shape}")
    if support.shape[0] != query.shape[0] or support.shape[2] != query.shape[2]:
        raise ValueError(f"support {support.shape} and query {query.shape} do not match")
    return support, support_labels, query, single


def _num_classes(support_labels, num_classes):
    return int(support_labels.max()) + 1 if num_classes is None else int(num_classes)


def _mm(a, b) -> np.ndarray:
    """``a @ b`` (batched) in float64 through torch, single-threaded when small.

    All matrix products and decompositions here go through torch, so only torch's
    thread pool is busy: numpy's OpenBLAS threads competing with torch's OpenMP threads
    made the same work up to 5x slower on 2 cores (measured). Small products run on one
    thread (see ``_torch_threads``).
    """
    a, b = _t(a), _t(b)
    with _torch_threads(a.numel() * b.shape[-1]):
        return torch.matmul(a, b).numpy()


def _t(x) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64))


def l2_normalize(x, eps: float = 1e-12):
    """Rows scaled to unit length (all-zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float64)
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norm, eps)


# ---------------------------------------------------------------------------
# nearest class mean
# ---------------------------------------------------------------------------


def ncm_predict(support, support_labels, query, num_classes: Optional[int] = None):
    """Nearest class mean, cosine: predicted labels ``[E, m]`` (or ``[m]``)."""
    S, Ys, Q, single = _batched(support, support_labels, query)
    k = _num_classes(Ys, num_classes)
    S, Q = l2_normalize(S), l2_normalize(Q)
    onehot = (Ys[..., None] == np.arange(k)).astype(np.float64)       # [E, n, K]
    counts = onehot.sum(1)                                              # [E, K]
    if (counts == 0).any():
        raise ValueError("every class needs at least one support embedding")
    means = _mm(np.swapaxes(onehot, 1, 2), S) / counts[..., None]      # [E, K, D]
    cosine = _mm(Q, np.swapaxes(l2_normalize(means), 1, 2))            # [E, m, K]
    pred = cosine.argmax(-1)  # first maximum: ties go to the lower class index
    return pred[0] if single else pred


# ---------------------------------------------------------------------------
# k-nearest neighbours
# ---------------------------------------------------------------------------


def knn_neighbours(train, query, k: int, chunk: Optional[int] = None) -> np.ndarray:
    """Indices ``[m, k]`` of each query's k most cosine-similar train rows, best first.

    Equal similarities are ranked by lower train index, so the result is deterministic
    (and independent of ``chunk``, the query rows per similarity block; by default as
    many as keep a block near 2e7 numbers). ``train`` [n, D], ``query`` [m, D], k <= n.
    """
    train, query = l2_normalize(train), l2_normalize(query)
    n = train.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"k must be in 1..{n} (the number of reference embeddings), got {k}")
    chunk = chunk or max(1, 20_000_000 // n)
    out = np.empty((query.shape[0], k), dtype=np.int64)
    for start in range(0, query.shape[0], chunk):
        neg = -_mm(query[start:start + chunk], train.T)                 # [c, n]
        kth = np.partition(neg, k - 1, axis=1)[:, k - 1:k]              # k-th best
        strict = neg < kth
        tie = neg == kth
        need = k - strict.sum(1, keepdims=True)
        # The ties at the k-th value are taken in index order, as many as fit.
        chosen = strict | (tie & (np.cumsum(tie, axis=1) <= need))
        rows, idx = np.nonzero(chosen)       # k per row, ascending index within a row
        idx = idx.reshape(-1, k)
        order = np.argsort(np.take_along_axis(neg, idx, 1), axis=1, kind="stable")
        out[start:start + chunk] = np.take_along_axis(idx, order, 1)
    return out


def _vote(neighbour_labels: np.ndarray, num_classes: int, chunk: int = 4096) -> np.ndarray:
    """Majority vote over ranked neighbour labels [m, k]; ties -> the tied class whose
    best-ranked neighbour comes first. Works on ``chunk`` rows at a time ([chunk, K])."""
    m, k = neighbour_labels.shape
    out = np.empty(m, dtype=np.int64)
    for start in range(0, m, chunk):
        labels = neighbour_labels[start:start + chunk]
        rows = np.arange(labels.shape[0])
        votes = np.zeros((labels.shape[0], num_classes), dtype=np.int64)
        rank = np.full((labels.shape[0], num_classes), k, dtype=np.int64)
        for j in range(k - 1, -1, -1):  # backwards, so rank ends at the first occurrence
            votes[rows, labels[:, j]] += 1  # one (row, label) pair per row: no clashes
            rank[rows, labels[:, j]] = j
        # Lexicographic (more votes, then earlier best neighbour); absent classes < 0.
        score = np.where(votes > 0, votes * (k + 1) + (k - rank), -1)
        out[start:start + chunk] = score.argmax(1)
    return out


def knn_predict(support, support_labels, query, k: int = 1,
                num_classes: Optional[int] = None):
    """k-NN (cosine, majority vote, deterministic ties): labels ``[E, m]`` (or ``[m]``).

    ``k`` larger than the support set is capped at its size.
    """
    S, Ys, Q, single = _batched(support, support_labels, query)
    K = _num_classes(Ys, num_classes)
    kk = min(int(k), S.shape[1])
    pred = np.stack([
        _vote(Ys[e][knn_neighbours(S[e], Q[e], kk)], K) for e in range(S.shape[0])
    ])
    return pred[0] if single else pred


def knn_scores(train, train_targets, query, k: int) -> np.ndarray:
    """Multi-label k-NN: fraction of the k neighbours carrying each class, ``[m, C]``.

    ``train_targets`` is a 0/1 matrix ``[n, C]``.
    """
    targets = np.asarray(train_targets, dtype=np.float64)
    kk = min(int(k), targets.shape[0])
    nbrs = knn_neighbours(train, query, kk)
    scores = np.zeros((nbrs.shape[0], targets.shape[1]))
    for j in range(kk):  # [m, C] at a time rather than [m, k, C]
        scores += targets[nbrs[:, j]]
    return scores / kk


# ---------------------------------------------------------------------------
# logistic regression (torch L-BFGS, float64)
# ---------------------------------------------------------------------------


@dataclass
class LogRegModel:
    """Standardisation and weights of a batch of fitted logistic regressions.

    ``mean``, ``std``: ``[E, 1, D]``; ``weight``: ``[E, D, K]``; ``bias``: ``[E, K]``.
    Multinomial models give class scores; one-vs-rest models give one logit per class,
    with ``constant`` holding the fixed score of classes that were all-positive or
    all-negative in training (NaN for fitted classes).
    """

    mean: np.ndarray
    std: np.ndarray
    weight: np.ndarray
    bias: np.ndarray
    n_iter: int
    max_abs_grad: float
    constant: Optional[np.ndarray] = None

    def decision_function(self, x) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        single = x.ndim == 2
        if single:
            x = x[None]
        z = (x - self.mean) / self.std
        scores = _mm(z, self.weight) + self.bias[:, None, :]
        if self.constant is not None:
            fixed = ~np.isnan(self.constant)
            scores[..., fixed] = self.constant[fixed]
        return scores[0] if single else scores

    def predict(self, x) -> np.ndarray:
        return self.decision_function(x).argmax(-1)


def _standardize(x: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Mean and std over the sample axis (std 1 for constant features)."""
    mean = x.mean(axis=-2, keepdims=True)
    std = x.std(axis=-2, keepdims=True)
    std = np.where(std > 1e-12 * np.maximum(np.abs(mean), 1.0), std, 1.0)
    return mean, std


@contextlib.contextmanager
def _torch_threads(work: int):
    """One torch thread for problems under ``SMALL_WORK`` multiply-adds: there, thread
    hand-offs cost more than the arithmetic (measured 3-10x slower with 2 threads on a
    2-core machine, and up to 40x when another process holds one of the cores)."""
    before = torch.get_num_threads()
    if work < SMALL_WORK and before > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


# Below this many multiply-adds per objective evaluation, L-BFGS runs single-threaded.
SMALL_WORK = 50_000_000


def _lbfgs(params, objective, max_iter: int, tol: float) -> Tuple[int, float]:
    """Minimise ``objective()`` over ``params``; return (iterations, max |gradient|)."""
    opt = torch.optim.LBFGS(params, lr=1.0, max_iter=max_iter, max_eval=2 * max_iter,
                            tolerance_grad=tol, tolerance_change=1e-14, history_size=20,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = objective()
        loss.backward()
        return loss

    opt.step(closure)
    n_iter = int(opt.state[opt.param_groups[0]["params"][0]].get("n_iter", 0))
    opt.zero_grad()
    objective().backward()
    max_abs = max(float(p.grad.abs().max()) for p in params)
    return n_iter, max_abs


def _warn_unconverged(what: str, max_abs_grad: float, max_iter: int):
    if max_abs_grad > 1e-3:
        warnings.warn(f"{what}: L-BFGS stopped after at most {max_iter} iterations with "
                      f"max |gradient| {max_abs_grad:.2e}; raise max_iter",
                      RuntimeWarning, stacklevel=3)


def _row_space(z: np.ndarray, rel_eps: float = 1e-10):
    """For ``z`` [E, n, D] with n < D: coordinates ``z @ V`` [E, n, n] in an orthonormal
    basis ``V`` [E, D, n] of each episode's row space, else None.

    The data term of an L2-penalised linear model depends on ``W`` only through its
    part in the row space of the inputs, and the penalty is smallest with nothing
    outside it, so the optimum is ``W = V beta`` where ``beta`` solves the same problem
    on ``z @ V``: an exact reduction from D to n unknowns per class. ``V`` comes from the
    eigenvectors of the Gram matrix ``z z^T`` (5x faster than an SVD here); directions
    with eigenvalue below ``rel_eps`` times the largest (e.g. the one removed by
    centring) get zero columns, so their coefficients stay 0.
    """
    n, D = z.shape[-2:]
    if n >= D:
        return None
    zt = _t(z)
    # A batch of small eigenproblems: torch spreads them badly over threads (measured
    # 20x slower with 2 threads than with 1 for 600 episodes of 50 clips).
    with _torch_threads(0):
        lam, u = (a.numpy() for a in torch.linalg.eigh(zt @ zt.transpose(-1, -2)))
    keep = lam > rel_eps * np.maximum(lam[..., -1:], np.finfo(np.float64).tiny)
    sv = np.sqrt(np.where(keep, lam, 0.0))
    coords = u * sv[..., None, :]                                          # = z @ V
    inv = np.where(keep, 1.0 / np.where(keep, sv, 1.0), 0.0)
    basis = _mm(np.swapaxes(z, -1, -2), u) * inv[..., None, :]             # [E, D, n]
    return coords, basis


def standardizer(x) -> Tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and standard deviation ``[D]`` of embeddings ``[N, D]`` (a
    constant feature gets standard deviation 1), to pass to ``fit_logreg``."""
    mean, std = _standardize(np.asarray(x, dtype=np.float64))
    return mean[0], std[0]


def _diagonal_preconditioner(feats: torch.Tensor, K: int, C: float) -> torch.Tensor:
    """Per-feature scales ``[..., d, 1]`` for solving in ``G`` with ``W = scale * G``.

    At ``W = 0`` (uniform probabilities) the Hessian's diagonal is
    ``c * mean_i f_ij^2 + 1 / (C n)`` for feature j and ``c`` for the intercept, with
    ``c = (K - 1) / K^2`` (K = 2 for a binary model). Scaling feature j by
    ``sqrt(c / (c * mean_i f_ij^2 + 1 / (C n)))`` gives every unknown, intercept
    included, the same starting curvature ``c``. That matters when feature scales
    differ widely, as the row-space coordinates' do (their squares sum to the Gram
    eigenvalues): 2-4x fewer L-BFGS iterations on real 5-way episodes; on standardised
    features the scales are near 1 and change little. A change of variables only: the
    minimiser in ``W`` is the same.
    """
    n = feats.shape[-2]
    c = (K - 1) / K ** 2
    second = (feats * feats).mean(dim=-2)                                  # [..., d]
    return (second + 1.0 / (c * C * n)).rsqrt()[..., None]


def fit_logreg(x, y, num_classes: Optional[int] = None, C: float = 1.0,
               max_iter: int = 1000, tol: float = 1e-6,
               max_chunk_elements: int = 20_000_000,
               stats: Optional[Tuple[np.ndarray, np.ndarray]] = None) -> LogRegModel:
    """Multinomial logistic regression on standardised features, ``[E, n, D]`` or ``[n, D]``.

    Per episode: minimise ``(1/n) sum_i CE_i + ||W||^2 / (2 C n)``, which is
    scikit-learn's ``0.5 ||W||^2 + C sum_i CE_i`` divided by ``C n`` (same minimiser).
    Features are standardised with ``stats`` (mean, std ``[D]``, e.g. from
    ``standardizer`` over a whole unlabelled pool) or, by default, with each episode's
    own training rows. With fewer samples than dimensions (few-shot) the problem is
    solved exactly in the row space of the standardised training rows (see
    ``_row_space``). Episodes are solved together, in chunks of at most
    ``max_chunk_elements`` input numbers.
    """
    if C <= 0:
        raise ValueError(f"C must be positive, got {C}")
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64)
    single = x.ndim == 2
    if single:
        x, y = x[None], y[None]
    E, n, D = x.shape
    K = _num_classes(y, num_classes)
    if stats is None:
        mean, std = _standardize(x)
    else:
        mean = np.broadcast_to(np.asarray(stats[0], dtype=np.float64), (E, 1, D))
        std = np.broadcast_to(np.asarray(stats[1], dtype=np.float64), (E, 1, D))
    z = (x - mean) / std
    reduced = _row_space(z)
    feats = z if reduced is None else reduced[0]
    d = feats.shape[-1]
    coef = np.zeros((E, d, K))
    bias = np.zeros((E, K))
    per_chunk = max(1, max_chunk_elements // max(1, n * d))
    n_iter, worst = 0, 0.0
    for start in range(0, E, per_chunk):
        fc = torch.from_numpy(np.ascontiguousarray(feats[start:start + per_chunk]))
        yc = torch.from_numpy(y[start:start + per_chunk])
        e = fc.shape[0]
        scale = _diagonal_preconditioner(fc, K, C)                       # [e, d, 1]
        G = torch.zeros(e, d, K, dtype=torch.float64, requires_grad=True)
        b = torch.zeros(e, K, dtype=torch.float64, requires_grad=True)

        def objective():
            W = scale * G
            logits = torch.baddbmm(b[:, None, :], fc, W)                 # [e, n, K]
            ce = torch.nn.functional.cross_entropy(
                logits.reshape(-1, K), yc.reshape(-1), reduction="sum") / n
            return ce + (W * W).sum() / (2.0 * C * n)

        with _torch_threads(fc.numel() * K):
            it, g = _lbfgs([G, b], objective, max_iter, tol)
        n_iter, worst = max(n_iter, it), max(worst, g)
        coef[start:start + e] = (scale * G).detach().numpy()
        bias[start:start + e] = b.detach().numpy()
    _warn_unconverged("logistic regression", worst, max_iter)
    weight = coef if reduced is None else _mm(reduced[1], coef)            # [E, D, K]
    return LogRegModel(mean=mean, std=std, weight=weight, bias=bias, n_iter=n_iter,
                       max_abs_grad=worst)


def logreg_predict(support, support_labels, query, num_classes: Optional[int] = None,
                   C: float = 1.0, max_iter: int = 1000,
                   stats: Optional[Tuple[np.ndarray, np.ndarray]] = None):
    """Fit ``fit_logreg`` on the support set and predict the queries."""
    S, Ys, Q, single = _batched(support, support_labels, query)
    model = fit_logreg(S, Ys, _num_classes(Ys, num_classes), C=C, max_iter=max_iter,
                       stats=stats)
    pred = model.predict(Q)
    return pred[0] if single else pred


def fit_ovr_logreg(x, targets, C: float = 1.0, max_iter: int = 1000,
                   tol: float = 1e-6) -> LogRegModel:
    """One-vs-rest logistic regression for multi-label data: ``x`` [n, D], 0/1
    ``targets`` [n, C]. Each class minimises ``(1/n) sum_i BCE_i + ||w||^2 / (2 C n)``
    on standardised features; a class that is all-positive or all-negative in training
    cannot be fitted and gets a constant score (so its AP is its test prevalence).
    ``decision_function`` returns logits ``[m, C]``.
    """
    if C <= 0:
        raise ValueError(f"C must be positive, got {C}")
    x = np.asarray(x, dtype=np.float64)
    t = np.asarray(targets, dtype=np.float64)
    n, D = x.shape
    if t.shape[0] != n:
        raise ValueError(f"{n} embeddings but {t.shape[0]} target rows")
    positives = t.sum(0)
    fit = (positives > 0) & (positives < n)
    constant = np.where(fit, np.nan, np.where(positives > 0, 1.0, -1.0))
    mean, std = _standardize(x)
    weight = np.zeros((1, D, t.shape[1]))
    bias = np.zeros((1, t.shape[1]))
    n_iter, worst = 0, 0.0
    if fit.any():
        z = (x - mean) / std
        reduced = _row_space(z[None])
        feats = z if reduced is None else reduced[0][0]
        z = torch.from_numpy(np.ascontiguousarray(feats))
        tt = torch.from_numpy(t[:, fit])
        scale = _diagonal_preconditioner(z, 2, C)                        # [d, 1]
        G = torch.zeros(z.shape[1], int(fit.sum()), dtype=torch.float64, requires_grad=True)
        b = torch.zeros(int(fit.sum()), dtype=torch.float64, requires_grad=True)

        def objective():
            W = scale * G
            logits = torch.addmm(b, z, W)
            bce = torch.nn.functional.binary_cross_entropy_with_logits(
                logits, tt, reduction="sum") / n
            return bce + (W * W).sum() / (2.0 * C * n)

        with _torch_threads(z.numel() * tt.shape[1]):
            n_iter, worst = _lbfgs([G, b], objective, max_iter, tol)
        coef = (scale * G).detach().numpy()
        weight[0][:, fit] = coef if reduced is None else _mm(reduced[1][0], coef)
        bias[0][fit] = b.detach().numpy()
        _warn_unconverged("one-vs-rest logistic regression", worst, max_iter)
    return LogRegModel(mean=mean[None], std=std[None], weight=weight, bias=bias,
                       n_iter=n_iter, max_abs_grad=worst, constant=constant)


# ---------------------------------------------------------------------------
# average precision
# ---------------------------------------------------------------------------


def multi_hot(labels: Sequence[Sequence[str]], class_names: Sequence[str]) -> np.ndarray:
    """0/1 matrix ``[len(labels), len(class_names)]`` of class-name lists."""
    index = {c: i for i, c in enumerate(class_names)}
    out = np.zeros((len(labels), len(class_names)), dtype=np.float64)
    for i, row in enumerate(labels):
        for c in row:
            out[i, index[c]] = 1.0
    return out
