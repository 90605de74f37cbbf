"""Padding diagnostic of pooled embeddings.

Clips shorter than the encoder's input are zero-padded, and mean pooling over a crop
that is mostly padding can make the clip's length the main thing an embedding encodes.
For each encoder (or baseline) this reports, over the clips of a manifest:

* ``pc1_variance_share``: the share of the total variance carried by the first
  principal component of the embeddings (centred, not scaled);
* ``pc1_duration_abs_corr``: |Pearson r| between the clips' scores on that component
  and their durations in seconds (from the manifest's sample counts).

A large share together with a large |r| says that the dominant direction of the
embedding space is clip length (often: the amount of padding), not content.
Plain numpy, no fairseq.
"""

from typing import Dict, Optional, Sequence

import numpy as np

__all__ = ["format_diagnostics", "manifest_durations", "pc1_diagnostic"]


def pc1_diagnostic(embeddings, durations) -> Dict[str, Optional[float]]:
    """``{"pc1_variance_share", "pc1_duration_abs_corr"}`` of ``embeddings`` [N, D]
    against ``durations`` [N]. A value that is undefined (fewer than 2 clips, no
    variance, constant durations) is None."""
    x = np.asarray(embeddings, dtype=np.float64)
    d = np.asarray(durations, dtype=np.float64).reshape(-1)
    if x.ndim != 2 or x.shape[0] != d.shape[0]:
        raise ValueError(f"embeddings {x.shape} and durations {d.shape} do not match")
    out = {"pc1_variance_share": None, "pc1_duration_abs_corr": None}
    if x.shape[0] < 2:
        return out
    xc = x - x.mean(axis=0)
    _, s, vt = np.linalg.svd(xc, full_matrices=False)
    total = float((s ** 2).sum())
    if not total > 0:
        return out
    out["pc1_variance_share"] = float(s[0] ** 2 / total)
    scores = xc @ vt[0]
    dc = d - d.mean()
    sc = scores - scores.mean()
    denom = np.sqrt((sc ** 2).sum() * (dc ** 2).sum())
    if denom > 0:
        out["pc1_duration_abs_corr"] = float(abs((sc * dc).sum()) / denom)
    return out


def manifest_durations(manifest_path, sample_rate: int = 16000) -> np.ndarray:
    """Durations in seconds of a manifest's clips: sample counts / ``sample_rate``.
    (Counts are at each file's own rate; with files at one rate other than
    ``sample_rate`` the durations are off by a constant factor, which leaves |r|
    unchanged.)"""
    from ..manifest import read_manifest

    return np.asarray(read_manifest(manifest_path).sizes, dtype=np.float64) / sample_rate


def format_diagnostics(diagnostics: Dict[str, Dict], order: Sequence[str],
                       where: str = "") -> str:
    """The text block printed below the table."""
    def fmt(v):
        return "n/a" if v is None else f"{v:.3f}"

    names = [n for n in order if n in diagnostics]
    width = max([len("encoder")] + [len(n) for n in names])
    lines = ["padding diagnostic" + (f" ({where})" if where else "") +
             ": first principal component (PC1) of the pooled embeddings",
             f"{'encoder'.ljust(width)}  PC1 variance share  |r(PC1, duration)|",
             f"{'-' * width}  ------------------  ------------------"]
    for n in names:
        d = diagnostics[n]
        lines.append(f"{n.ljust(width)}  {fmt(d['pc1_variance_share']):>18}  "
                     f"{fmt(d['pc1_duration_abs_corr']):>18}")
    return "\n".join(lines)
