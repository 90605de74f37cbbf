"""t-SNE scatter plots of clip embeddings, coloured by class, for one encoder or two side
by side (e.g. the AudioMAE checkpoint before and after uaMix-MAE tuning):

    python -m uamix_fairseq.tools.tsne --manifest valid.tsv \\
        --encoder audiomae.pth --name before --encoder tuned.pth --name after \\
        --out tsne.png

The labels come from the ``.label`` file beside the manifest (``--labels`` for another
one); a multi-label clip is coloured by its first class. With more clips than
``--max-clips`` a stratified subset is drawn (seeded; every class keeps its share, and
at least one clip while there is room), and the same clips are used for every
encoder. Embeddings come from ``uamix_fairseq.tools.embed`` (same features and pooling as the
other evaluation tools; ``--cache-dir`` reuses them). Each encoder's embeddings get
their own ``sklearn.manifold.TSNE`` (PCA initialisation, fixed ``--seed``); the
perplexity is lowered to ``(N - 1) / 3`` when there are few clips. The 2-D points can be
saved with ``--save-coords``.
"""

import argparse
import logging
import math
import os
import sys
import tempfile
from typing import Optional, Sequence, Tuple

import numpy as np

from .export_embeddings import add_embedding_arguments, embed_clips, embedding_kwargs
from ..labels import read_labels
from ..manifest import read_manifest, write_manifest

__all__ = [
    "effective_perplexity",
    "main",
    "plot_tsne",
    "stratified_subsample",
    "tsne_2d",
]

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------
# subsampling and t-SNE
# ---------------------------------------------------------------------------


def _largest_remainder(capacity: np.ndarray, total: int) -> np.ndarray:
    """Split ``total`` into integer shares proportional to ``capacity``, never above it."""
    alloc = np.zeros(len(capacity), dtype=np.int64)
    if total <= 0 or capacity.sum() == 0:
        return alloc
    quota = capacity * (total / capacity.sum())
    alloc = np.floor(quota).astype(np.int64)
    short = total - int(alloc.sum())
    # The classes with the largest fractional parts get one more (ties: lower index).
    order = np.argsort(-(quota - alloc), kind="stable")
    alloc[order[:short]] += 1
    return np.minimum(alloc, capacity)


def stratified_subsample(classes: Sequence[str], max_clips: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of at most ``max_clips`` clips, each class keeping its share.

    Every class keeps at least one clip when ``max_clips`` is at least the number of
    classes. The draw within each class is seeded (``numpy.random.default_rng(seed)``)
    and independent of the order of the classes in the manifest.
    """
    classes = np.asarray(classes)
    n = len(classes)
    if max_clips < 1:
        raise ValueError(f"max_clips must be at least 1, got {max_clips}")
    if n <= max_clips:
        return np.arange(n)
    names, inverse, counts = np.unique(classes, return_inverse=True, return_counts=True)
    alloc = _largest_remainder(counts, max_clips)
    if max_clips >= len(names):
        # A class rounded down to nothing gets one clip, taken from the class that is
        # furthest above its exact share.
        quota = counts * (max_clips / counts.sum())
        for c in np.flatnonzero(alloc == 0):
            surplus = np.where(alloc > 1, alloc - quota, -np.inf)
            alloc[int(np.argmax(surplus))] -= 1
            alloc[c] = 1
    rng = np.random.default_rng(seed)
    chosen = [rng.choice(np.flatnonzero(inverse == c), size=int(k), replace=False)
              for c, k in enumerate(alloc) if k]
    return np.sort(np.concatenate(chosen))


def effective_perplexity(num_points: int, perplexity: float = 30.0) -> float:
    """The perplexity used for ``num_points`` points: at most ``(N - 1) / 3`` (the
    largest neighbourhood the points support), at least 1, always below N."""
    if num_points < 2:
        raise ValueError(f"t-SNE needs at least 2 clips, got {num_points}")
    if not perplexity > 0:
        raise ValueError(f"perplexity must be positive, got {perplexity}")
    return float(min(perplexity, max(1.0, (num_points - 1) / 3.0)))


def tsne_2d(embeddings: np.ndarray, perplexity: float = 30.0, seed: int = 0,
            metric: str = "cosine", threads: Optional[int] = None) -> np.ndarray:
    """2-D t-SNE coordinates ``[N, 2]`` of ``embeddings`` ``[N, D]`` (fixed seed, PCA
    initialisation, automatic learning rate; the perplexity clipped for few points).

    ``threads`` limits OpenMP threads (None: sklearn's default, all cores). On a busy
    machine 1 can be many times faster: OpenMP workers spin while waiting for cores.
    """
    from sklearn.manifold import TSNE

    x = np.asarray(embeddings, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be [N, D], got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("embeddings contain NaN or Inf")
    p = effective_perplexity(len(x), perplexity)
    tsne = TSNE(n_components=2, perplexity=p, init="pca", learning_rate="auto",
                metric=metric, random_state=seed)
    if threads is None:
        return tsne.fit_transform(x).astype(np.float32)
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=int(threads)):
        return tsne.fit_transform(x).astype(np.float32)


# ---------------------------------------------------------------------------
# plotting
# ---------------------------------------------------------------------------

_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h")


def _styles(num_classes: int):
    """(colour, marker) per class: tab10/tab20 colours, then a sampled colour map with
    cycling markers so that many classes stay distinguishable."""
    import matplotlib

    if num_classes <= 10:
        colours = [matplotlib.colormaps["tab10"](i) for i in range(num_classes)]
        return [(c, "o") for c in colours]
    if num_classes <= 20:
        colours = [matplotlib.colormaps["tab20"](i) for i in range(num_classes)]
        return [(c, "o") for c in colours]
    cmap = matplotlib.colormaps["turbo"]
    return [(cmap(i / max(1, num_classes - 1)), _MARKERS[i % len(_MARKERS)])
            for i in range(num_classes)]


def plot_tsne(panels: Sequence[Tuple[str, np.ndarray]], classes: Sequence[str], out_path,
              title: Optional[str] = None, dpi: int = 150) -> str:
    """Write a PNG with one scatter panel per ``(title, coords [N, 2])``, points coloured
    by ``classes`` (one name per point, the same for every panel), one shared legend."""
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend
    from matplotlib.lines import Line2D

    classes = np.asarray(classes)
    names, inverse, counts = np.unique(classes, return_inverse=True, return_counts=True)
    styles = _styles(len(names))
    n = len(classes)
    size = float(np.clip(3000.0 / max(n, 1), 4.0, 30.0))
    fig = Figure(figsize=(5.5 * len(panels) + 0.5, 5.5))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (panel_title, coords) in zip(axes, panels):
        coords = np.asarray(coords)
        if coords.shape != (n, 2):
            raise ValueError(f"panel {panel_title!r}: coordinates {coords.shape}, expected "
                             f"({n}, 2)")
        for c, (colour, marker) in enumerate(styles):
            pts = coords[inverse == c]
            ax.scatter(pts[:, 0], pts[:, 1], s=size, color=colour, marker=marker,
                       alpha=0.8, linewidths=0)
        ax.set_title(panel_title)
        ax.set_xticks([])
        ax.set_yticks([])
    handles = [Line2D([], [], linestyle="", marker=m, color=col, markersize=7,
                      label=f"{name} ({k})")
               for name, k, (col, m) in zip(names, counts, styles)]
    fig.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5),
               ncol=max(1, math.ceil(len(names) / 25)), fontsize="small",
               title=f"class (clips), {n} in all", frameon=False)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out_path = os.fspath(out_path)
    folder = os.path.dirname(os.path.abspath(out_path))
    os.makedirs(folder, exist_ok=True)
    tmp = f"{out_path}.tmp-{os.getpid()}"
    try:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
        os.replace(tmp, out_path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return out_path


# ---------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="uamix-plot-tsne",
        description="t-SNE scatter of the clip embeddings of a labelled manifest, coloured "
        "by class, for one encoder or two side by side; writes a PNG.")
    parser.add_argument("--manifest", required=True, help="fairseq manifest (.tsv)")
    parser.add_argument("--labels", default=None,
                        help="label file, one line per clip (default: the manifest's "
                        ".label beside it)")
    parser.add_argument("--encoder", action="append", required=True,
                        help="encoder file (AudioMAE .pth or a fairseq checkpoint of this "
                        "plugin); give it twice for two panels side by side")
    parser.add_argument("--name", action="append", default=None,
                        help="panel title, once per --encoder (default: the file names)")
    parser.add_argument("--out", required=True, help="PNG to write")
    parser.add_argument("--title", default=None, help="figure title")
    parser.add_argument("--max-clips", type=int, default=2000,
                        help="stratified, seeded subset of at most this many clips "
                        "(default: 2000)")
    parser.add_argument("--perplexity", type=float, default=30.0,
                        help="t-SNE perplexity, lowered to (N-1)/3 for few clips "
                        "(default: 30)")
    parser.add_argument("--metric", default="cosine", choices=("cosine", "euclidean"),
                        help="distance between embeddings (default: cosine)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the subset and of t-SNE (default: 0)")
    parser.add_argument("--threads", type=int, default=None,
                        help="OpenMP threads for t-SNE (default: all cores; 1 is much "
                        "faster on a busy machine)")
    parser.add_argument("--save-coords", default=None,
                        help="also write the 2-D points to this .npz (coords_0, coords_1, "
                        "classes, paths, names)")
    add_embedding_arguments(parser)
    return parser


def _run(args) -> str:
    if len(args.encoder) > 2:
        raise ValueError(f"--encoder given {len(args.encoder)} times; one or two encoders")
    names = args.name or [os.path.basename(p) for p in args.encoder]
    if len(names) != len(args.encoder):
        raise ValueError(f"{len(names)} --name for {len(args.encoder)} --encoder; give one "
                         "per encoder or none")
    if not args.out.lower().endswith(".png"):
        raise ValueError(f"--out {args.out}: the plot is a PNG; use a .png name")
    for path in args.encoder:
        if not os.path.isfile(path):
            raise ValueError(f"encoder {path} does not exist")
    manifest = read_manifest(args.manifest)
    labels = read_labels(args.manifest, args.labels)
    classes = [names_[0] for names_ in labels]
    multi = sum(len(names_) > 1 for names_ in labels)
    if multi:
        logger.warning("%d multi-label clip(s) are coloured by their first class", multi)
    chosen = stratified_subsample(classes, args.max_clips, args.seed)
    if len(chosen) < 2:
        raise ValueError(f"{args.manifest}: t-SNE needs at least 2 clips, it has {len(chosen)}")
    classes = [classes[i] for i in chosen]
    paths = [manifest.full_path(int(i)) for i in chosen]
    if len(chosen) < len(manifest):
        logger.info("stratified subset of %d of %d clips (seed %d)", len(chosen),
                    len(manifest), args.seed)
    p = effective_perplexity(len(chosen), args.perplexity)
    if p < args.perplexity:
        logger.info("perplexity lowered from %g to %.3g for %d clips", args.perplexity, p,
                    len(chosen))
    panels = []
    with tempfile.TemporaryDirectory(prefix="uamix-tsne-") as tmp:
        manifest_path = args.manifest
        if len(chosen) < len(manifest):
            manifest_path = os.path.join(tmp, "subset.tsv")
            write_manifest(manifest_path, manifest.root,
                           [(manifest.paths[i], manifest.sizes[i]) for i in chosen])
        for name, encoder in zip(names, args.encoder):
            emb, _ = embed_clips(encoder, manifest_path, **embedding_kwargs(args))
            panels.append((name, tsne_2d(emb, args.perplexity, args.seed, args.metric,
                                         args.threads)))
    title = args.title
    if title is None:
        title = (f"t-SNE of {os.path.basename(args.manifest)}: {len(chosen)} clips, "
                 f"perplexity {p:.3g}, {args.metric}")
    plot_tsne(panels, classes, args.out, title=title)
    if args.save_coords:
        arrays = {f"coords_{i}": c for i, (_, c) in enumerate(panels)}
        np.savez(args.save_coords, classes=np.asarray(classes, dtype=str),
                 paths=np.asarray(paths, dtype=str), names=np.asarray(names, dtype=str),
                 **arrays)
    return f"wrote {args.out}: {len(chosen)} clips, {len(set(classes))} classes, " \
           f"{len(panels)} panel(s)"


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        print(_run(args))
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
