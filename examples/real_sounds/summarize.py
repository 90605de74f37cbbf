"""Paired gains of tuned encoders over their MAE start, over one or more benchmark runs.

    python examples/real_sounds/summarize.py OUT_DIR [OUT_DIR ...] [--start mae]

Each OUT_DIR is a finished ``run_benchmark.py`` folder (one tuning seed each; all must
share the MAE start and the episode seed, which the runner fixes). For every set,
classifier, shot count and tuned encoder it prints the accuracy of the start, the
gain averaged over the runs, and its 95% interval over episodes (the per-episode gain
averaged over the runs first, so the interval pairs episodes, not seeds), plus the
fbank_stats baseline, as a markdown table (with several runs also the lowest and
highest gain of a single run, in brackets: the spread over tuning seeds); then the mean
gain per encoder over every cell, averaged and for each run. Nothing is recomputed: it reads OUT_DIR/fewshot/<set>/fewshot.json.
"""

import argparse
import json
import os
import sys
from collections import defaultdict

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)

from uamix_fairseq.evaluation.stats import mean_ci  # noqa: E402

SETS = ("speakers", "fillets_voices", "sonicpi_families", "ufoai_categories")
BASELINE = "fbank-stats"


def load_runs(dirs):
    """{(set, classifier, shots): {encoder: [per-episode accuracies of each run]}}"""
    cells = defaultdict(lambda: defaultdict(list))
    for d in dirs:
        for s in SETS:
            path = os.path.join(d, "fewshot", s, "fewshot.json")
            if not os.path.isfile(path):
                raise SystemExit(f"error: {path} is missing: is {d} a finished run_benchmark.py folder?")
            with open(path) as f:
                for r in json.load(f)["results"]:
                    cells[(s, r["classifier"], r["shots"])][r["encoder"]].append(
                        np.asarray(r["values"], dtype=float))
    return cells


def summarize(cells, start):
    rows, gains = [], defaultdict(list)
    for (s, clf, k), encs in cells.items():
        if start not in encs:
            raise SystemExit(f"error: no encoder named {start!r} in the results of {s} "
                             f"(have {sorted(encs)}); pass --start")
        base = np.mean(encs[start], axis=0)
        row = {"set": s, "classifier": clf, "shots": k, start: 100 * base.mean()}
        for name, runs in encs.items():
            if name == start:
                continue
            if any(len(r) != len(base) for r in runs):
                raise SystemExit(f"error: {name} on {s} has other episodes than {start}")
            diff = mean_ci(100 * (np.mean(runs, axis=0) - base))
            per_run = [100 * (r.mean() - base.mean()) for r in runs]
            row[name] = (diff.mean, diff.ci, len(runs), min(per_run), max(per_run))
            gains[name].append(per_run)
        rows.append(row)
    return rows, gains


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", help="run_benchmark.py output folders")
    p.add_argument("--start", default="mae", help="the encoder the others are paired with")
    args = p.parse_args(argv)
    rows, gains = summarize(load_runs(args.runs), args.start)
    names = [n for n in gains]
    print(f"| set | classifier | shots | {args.start} | " + " | ".join(names) + " |")
    print("| --- | --- | ---: | ---: | " + " | ".join("---:" for _ in names) + " |")
    for r in rows:
        # gain ± 95% interval over episodes, then [lowest, highest] gain of a single run
        cells = [f"{r[n][0]:+.1f} ± {r[n][1]:.1f}" +
                 (f" [{r[n][3]:+.1f}, {r[n][4]:+.1f}]" if r[n][2] > 1 and n != BASELINE else "")
                 for n in names]
        print(f"| {r['set']} | {r['classifier']} | {r['shots']} | {r[args.start]:.1f} | "
              + " | ".join(cells) + " |")
    runs = {n: r[n][2] for r in rows[:1] for n in names}
    print("\nmean gain over all cells (runs averaged): "
          + ", ".join(f"{n} {np.mean(g):+.2f} ({runs[n]} run(s))" for n, g in gains.items()))
    print("mean gain over all cells, each run: "
          + "; ".join(f"{n} " + " / ".join(f"{v:+.2f}" for v in np.mean(g, axis=0))
                      for n, g in gains.items() if n != BASELINE))
    return 0


if __name__ == "__main__":
    sys.exit(main())
