"""Results of an evaluation: screen table, JSON, CSV and the accuracy-vs-k plot.

A ``Result`` holds the per-unit values (one accuracy per episode, one 0/1 correctness
per test clip, or one AP per class) of one encoder under one classifier and setting,
their summary (mean ± 95% interval, see ``stats``) and the paired difference to the
first encoder on the same units. Values are fractions in [0, 1]; the table and the plot
show percentages.

Under an attack (``robust`` module) a result also holds the robust values on the same
units, their summary, the paired robust-minus-clean difference and the robust paired
difference to the first encoder; the table, JSON and CSV show them beside the clean ones.
"""

import csv
import importlib.util
import json
import os
import sys
import textwrap
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .stats import Summary, mean_ci, paired_difference

__all__ = ["CLASS_CSV_FIELDS", "CSV_FIELDS", "ROBUST_CSV_FIELDS", "Result",
           "add_paired_differences", "class_rows", "format_class_table", "format_table",
           "plot_fewshot", "print_and_write", "write_class_csv", "write_csv", "write_json"]


@dataclass
class Result:
    encoder: str
    classifier: str
    metric: str                 # "accuracy" or "mAP"
    unit: str                   # what one value is: "episode", "clip" or "class"
    values: np.ndarray
    ways: Optional[int] = None  # few-shot N
    shots: Optional[int] = None  # few-shot k
    summary: Summary = field(init=False)
    reference: Optional[str] = None  # encoder the difference is taken against
    diff: Optional[Summary] = None   # this minus the reference, paired by unit
    robust_values: Optional[np.ndarray] = None  # the same units under attack
    robust: Optional[Summary] = field(init=False, default=None)
    robust_drop: Optional[Summary] = field(init=False, default=None)  # robust - clean
    robust_diff: Optional[Summary] = None  # robust: this minus the reference's robust
    # Few-shot: (correct, scored) query counts per global class over all episodes.
    class_counts: Optional[Tuple[np.ndarray, np.ndarray]] = None

    def __post_init__(self):
        self.values = np.asarray(self.values, dtype=np.float64)
        self.summary = mean_ci(self.values)
        if self.robust_values is not None:
            self.robust_values = np.asarray(self.robust_values, dtype=np.float64)
            self.robust = mean_ci(self.robust_values)
            self.robust_drop = paired_difference(self.values, self.robust_values)

    @property
    def setting(self):
        return (self.classifier, self.ways, self.shots, self.metric)


def add_paired_differences(results: Sequence[Result], encoder_order: Sequence[str],
                           reference: Optional[str] = None):
    """Set ``reference`` and ``diff`` of every result of the other encoders against
    the ``reference`` encoder's result (default: the first of ``encoder_order``) for
    the same setting (same units)."""
    first = reference or encoder_order[0]
    base = {r.setting: r for r in results if r.encoder == first}
    for r in results:
        ref = base.get(r.setting)
        if r.encoder == first or ref is None:
            continue
        r.reference = first
        r.diff = paired_difference(ref.values, r.values)
        if r.robust_values is not None and ref.robust_values is not None:
            r.robust_diff = paired_difference(ref.robust_values, r.robust_values)


def _sorted(results: Sequence[Result], encoder_order: Sequence[str]) -> List[Result]:
    """Grouped by classifier (in order of first appearance), N, k, then encoder."""
    rank = {name: i for i, name in enumerate(encoder_order)}
    first = {c: i for i, c in enumerate(dict.fromkeys(r.classifier for r in results))}
    return sorted(results, key=lambda r: (first[r.classifier], r.metric, r.ways or 0,
                                          r.shots or 0, rank[r.encoder]))


_PLURAL = {"episode": "episodes", "clip": "clips", "class": "classes"}


def _aligned(header: Sequence[str], lines: Sequence[Sequence[str]], left):
    """A fixed-width text table's row formatter and its rule line: every column as wide
    as its widest cell, the columns named in ``left`` left-aligned, the rest right."""
    widths = [max(len(h), *(len(c[i]) for c in lines)) for i, h in enumerate(header)]

    def fmt(cells):
        return "  ".join(c.ljust(w) if h in left else c.rjust(w)
                         for c, w, h in zip(cells, widths, header)).rstrip()

    return fmt, "  ".join("-" * w for w in widths)


def _pct(s: Summary, signed=False) -> str:
    sign = "+" if signed else ""
    ci = "n/a" if np.isnan(s.ci) else f"{100 * s.ci:.2f}"
    return f"{100 * s.mean:{sign}.2f} ± {ci}"


def format_table(results: Sequence[Result], encoder_order: Sequence[str],
                 title: str = "", reference: Optional[str] = None) -> str:
    """Fixed-width text table: one row per (classifier, N, k, encoder), percentages."""
    rows = _sorted(results, encoder_order)
    fewshot = any(r.ways is not None for r in rows)
    robust = any(r.robust is not None for r in rows)
    ref = reference or encoder_order[0]
    header = ["classifier"] + (["N", "k"] if fewshot else []) + \
        ["encoder", "metric", "n", ("clean " if robust else "") + "mean ± 95% CI (%)",
         f"Δ vs {ref} (%)"]
    if robust:
        header += ["robust ± 95% CI (%)", f"robust Δ vs {ref} (%)", "robust - clean (%)"]
    lines = []

    def signed(s):
        return _pct(s, signed=True) if s is not None else "-"

    for r in rows:
        cells = [r.classifier]
        if fewshot:
            cells += [str(r.ways), str(r.shots)]
        count = f"{r.summary.n} {_PLURAL.get(r.unit, r.unit)}"
        cells += [r.encoder, r.metric, count, _pct(r.summary), signed(r.diff)]
        if robust:
            cells += [_pct(r.robust) if r.robust is not None else "-",
                      signed(r.robust_diff), signed(r.robust_drop)]
        lines.append(cells)
    fmt, rule = _aligned(header, lines, left={"classifier", "encoder", "metric"})
    out = [title] if title else []
    out += [fmt(header), rule]
    previous = None
    for r, cells in zip(rows, lines):
        group = r.setting
        if previous is not None and group != previous and len(encoder_order) > 1:
            out.append("")
        previous = group
        out.append(fmt(cells))
    return "\n".join(out)


CSV_FIELDS = ["encoder", "classifier", "ways", "shots", "metric", "unit", "n", "mean",
              "ci95", "std", "low", "high", "diff_vs", "diff_mean", "diff_ci95"]
# Appended when some result has robust values (runs with an attack).
ROBUST_CSV_FIELDS = ["robust_mean", "robust_ci95", "robust_diff_mean", "robust_diff_ci95",
                     "robust_minus_clean_mean", "robust_minus_clean_ci95"]


def _record(r: Result, with_values: bool) -> Dict:
    s, d = r.summary, r.diff
    rec = {
        "encoder": r.encoder, "classifier": r.classifier, "ways": r.ways,
        "shots": r.shots, "metric": r.metric, "unit": r.unit, "n": s.n,
        "mean": s.mean, "ci95": s.ci, "std": s.std, "low": s.low, "high": s.high,
        "diff_vs": r.reference, "diff_mean": d.mean if d else None,
        "diff_ci95": d.ci if d else None,
    }
    if r.robust is not None:
        rd, drop = r.robust_diff, r.robust_drop
        rec.update(robust_mean=r.robust.mean, robust_ci95=r.robust.ci,
                   robust_diff_mean=rd.mean if rd else None,
                   robust_diff_ci95=rd.ci if rd else None,
                   robust_minus_clean_mean=drop.mean, robust_minus_clean_ci95=drop.ci)
    rec = {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in rec.items()}
    if with_values:
        rec["values"] = [float(v) for v in r.values]
        if r.robust is not None:
            rec["robust_values"] = [float(v) for v in r.robust_values]
    return rec


def write_json(path, results: Sequence[Result], encoder_order: Sequence[str],
               settings: Dict, encoders: Sequence[Dict],
               diagnostics: Optional[Dict] = None):
    """JSON with the settings, the encoders and every result (with per-unit values);
    ``diagnostics`` (name -> padding diagnostic) is stored when given."""
    rows = _sorted(results, encoder_order)
    payload = {
        "settings": settings,
        "encoders": list(encoders),
        "interval": "95% Student-t over units (episodes, test clips or classes); "
                    "values are fractions",
        "results": [_record(r, with_values=True) for r in rows],
    }
    if diagnostics is not None:
        payload["diagnostics"] = diagnostics
    _atomic_write(path, json.dumps(payload, indent=1, allow_nan=False) + "\n")


def write_csv(path, results: Sequence[Result], encoder_order: Sequence[str]):
    """One CSV row per result (fractions; empty cells for missing values); the
    ``ROBUST_CSV_FIELDS`` columns follow when a result has robust values."""
    rows = _sorted(results, encoder_order)
    fields = CSV_FIELDS + (ROBUST_CSV_FIELDS if any(r.robust is not None for r in rows)
                           else [])
    _write_dict_csv(path, fields, [_record(r, with_values=False) for r in rows])


def _write_dict_csv(path, fields: Sequence[str], rows: Sequence[Dict]):
    """Rows (dicts) as CSV under ``fields``, None and missing keys as empty cells,
    written to a temporary file first so a reader never sees half a table."""
    tmp = f"{path}.tmp"
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fields, restval="")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    os.replace(tmp, path)


CLASS_CSV_FIELDS = ["encoder", "classifier", "ways", "shots", "class", "queries",
                    "accuracy", "diff_vs", "diff"]


def class_rows(results: Sequence[Result], encoder_order: Sequence[str],
               class_names: Sequence[str]) -> List[Dict]:
    """One row per result with ``class_counts`` and class with scored queries: the
    pooled clean accuracy of that class's queries (a fraction) and, once
    ``add_paired_differences`` has run, its difference from the reference encoder's on
    the same queries (``diff``; empty for the reference itself)."""
    rows = [r for r in _sorted(results, encoder_order) if r.class_counts is not None]
    by_name = {(r.encoder, r.setting): r for r in rows}
    out = []
    for r in rows:
        correct, scored = r.class_counts
        ref = by_name.get((r.reference, r.setting))
        for c in np.flatnonzero(scored):
            acc = correct[c] / scored[c]
            diff = None if ref is None else acc - ref.class_counts[0][c] / scored[c]
            out.append({"encoder": r.encoder, "classifier": r.classifier, "ways": r.ways,
                        "shots": r.shots, "class": class_names[c], "queries": int(scored[c]),
                        "accuracy": float(acc), "diff_vs": r.reference,
                        "diff": None if diff is None else float(diff)})
    return out


def format_class_table(rows: Sequence[Dict], encoder_order: Sequence[str]) -> str:
    """``class_rows`` as text: per (classifier, N, k) one line per class, the first
    encoder's accuracy then every other encoder's difference from it (points)."""
    blocks = []
    settings = list(dict.fromkeys((r["classifier"], r["ways"], r["shots"]) for r in rows))
    for setting in settings:
        mine = [r for r in rows if (r["classifier"], r["ways"], r["shots"]) == setting]
        names = [n for n in encoder_order if any(r["encoder"] == n for r in mine)]
        classes = list(dict.fromkeys(r["class"] for r in mine))
        cell = {(r["encoder"], r["class"]): r for r in mine}
        header = ["class", "queries", f"{names[0]} (%)"] + [f"Δ {n}" for n in names[1:]]
        lines = []
        for c in classes:
            first = cell[names[0], c]
            lines.append([c, str(first["queries"]), f"{100 * first['accuracy']:.1f}"] +
                         [f"{100 * cell[n, c]['diff']:+.1f}" if cell[n, c]["diff"] is not None
                          else "-" for n in names[1:]])
        fmt, rule = _aligned(header, lines, left={"class"})
        classifier, ways, shots = setting
        blocks.append("\n".join([f"{classifier}, {ways}-way {shots}-shot, per class:",
                                 fmt(header), rule] + [fmt(x) for x in lines]))
    return "\n\n".join(blocks)


def write_class_csv(path, rows: Sequence[Dict]):
    """``class_rows`` as CSV (fractions; empty cells for missing values)."""
    _write_dict_csv(path, CLASS_CSV_FIELDS, rows)


def _atomic_write(path, text: str):
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def plot_fewshot(path, results: Sequence[Result], encoder_order: Sequence[str],
                 title: str = "") -> None:
    """PNG of accuracy (%) against k: one panel per (classifier, N), one line per
    encoder (dashed: under attack), error bars = 95% interval. Needs matplotlib; draws
    on a bare ``Figure`` (rendered by Agg), so no display is needed and pyplot's global
    state is untouched."""
    from matplotlib.figure import Figure

    fewshot = [r for r in results if r.shots is not None]
    if not fewshot:
        raise ValueError("no few-shot results to plot")
    # One row per classifier (in the table's order), one column per N.
    classifiers = list(dict.fromkeys(r.classifier for r in fewshot))
    ways_list = sorted({r.ways for r in fewshot})
    panels = [(c, w) for c in classifiers for w in ways_list]
    nrows, cols = len(classifiers), len(ways_list)
    fig = Figure(figsize=(4.2 * cols, 3.4 * nrows))
    axes = fig.subplots(nrows, cols, squeeze=False)
    all_shots = sorted({r.shots for r in fewshot})
    span = (all_shots[-1] - all_shots[0]) or 1
    for p, (ax, (classifier, ways)) in enumerate(zip(axes.ravel(), panels)):
        shots_seen = set()
        for i, name in enumerate(encoder_order):
            rs = sorted((r for r in fewshot if r.classifier == classifier
                         and r.ways == ways and r.encoder == name), key=lambda r: r.shots)
            if not rs:
                continue
            shots_seen.update(r.shots for r in rs)
            # A small sideways offset per encoder keeps overlapping error bars apart.
            dodge = (i - (len(encoder_order) - 1) / 2) * 0.015 * span
            ax.errorbar([r.shots + dodge for r in rs], [100 * r.summary.mean for r in rs],
                        yerr=[0 if np.isnan(r.summary.ci) else 100 * r.summary.ci
                              for r in rs],
                        marker="o", capsize=3, label=name, color=f"C{i}")
            if all(r.robust is not None for r in rs):  # attacked: dashed, same colour
                ax.errorbar([r.shots + dodge for r in rs],
                            [100 * r.robust.mean for r in rs],
                            yerr=[0 if np.isnan(r.robust.ci) else 100 * r.robust.ci
                                  for r in rs], marker="x", capsize=3, linestyle="--",
                            label=f"{name} (attacked)", color=f"C{i}")
        ax.axhline(100.0 / ways, color="0.5", linestyle=":", linewidth=1,
                   label="chance" if p == 0 else None)
        ax.set_xticks(sorted(shots_seen))
        ax.set_title(f"{classifier}, {ways}-way")
        ax.set_xlabel("shots per class (k)")
        ax.set_ylabel("accuracy (%)")
        ax.grid(alpha=0.3)
        if p == 0:
            ax.legend(fontsize="small")
    if title:
        # Wrapped here, to the figure's width (about 10 characters per inch at this
        # size): matplotlib's own wrap=True lets a centred title run off the left edge.
        width = max(20, int(fig.get_figwidth() * 10))
        fig.suptitle("\n".join(textwrap.fill(line, width) for line in title.splitlines()))
    fig.tight_layout()
    tmp = f"{path}.tmp.png"
    fig.savefig(tmp, dpi=110, format="png")
    os.replace(tmp, path)


def print_and_write(results: List[Result], encoder_order: Sequence[str], out_dir,
                    stem: str, settings: Dict, encoders: Sequence[Dict],
                    title: str = "", plot: bool = False, stream=None,
                    diagnostics: Optional[Dict] = None, diagnostics_where: str = "",
                    reference: Optional[str] = None) -> Dict[str, str]:
    """Add paired differences (against ``reference``, default the first encoder),
    print the table (and below it the padding diagnostic, when given), write
    ``<stem>.json``/``.csv`` (and ``.png`` with ``plot``) under ``out_dir``; return the
    paths written."""
    stream = stream or sys.stdout
    add_paired_differences(results, encoder_order, reference)
    print(format_table(results, encoder_order, title, reference), file=stream, flush=True)
    if diagnostics:
        from .diagnostics import format_diagnostics

        print("\n" + format_diagnostics(diagnostics, encoder_order, diagnostics_where),
              file=stream, flush=True)
    os.makedirs(out_dir, exist_ok=True)
    paths = {"json": os.path.join(out_dir, f"{stem}.json"),
             "csv": os.path.join(out_dir, f"{stem}.csv")}
    write_json(paths["json"], results, encoder_order, settings, encoders, diagnostics)
    write_csv(paths["csv"], results, encoder_order)
    if plot:
        if importlib.util.find_spec("matplotlib") is None:
            print("note: matplotlib is not installed, so no plot was written "
                  "(pip install matplotlib)", file=sys.stderr)
        else:
            paths["png"] = os.path.join(out_dir, f"{stem}.png")
            plot_fewshot(paths["png"], results, encoder_order, title)
    return paths
