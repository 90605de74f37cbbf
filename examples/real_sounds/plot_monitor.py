"""Monitor curves as one PNG: leave-one-out k-NN (or NCM) accuracy of every monitor set
against the update, one line per tuning variant, for a run_benchmark.py folder or the
main job's (examples/demo/demo_pipeline.py).

    python examples/real_sounds/plot_monitor.py OUT_DIR [--out monitor.png] [--metric knn|ncm]

Reads OUT_DIR/results.json (written by run_benchmark.py or demo_pipeline.py); needs
matplotlib.
"""

import argparse
import json
import os
import sys


def load_curves(out_dir):
    """{variant: {set: [(update, knn, ncm)]}} of a finished run_benchmark.py or
    demo_pipeline.py folder."""
    path = os.path.join(out_dir, "results.json")
    if not os.path.isfile(path):
        raise SystemExit(f"error: {path} is missing: is {out_dir} a finished run_benchmark.py or demo_pipeline.py folder?")
    with open(path) as f:
        curves = json.load(f).get("monitor_curves") or {}
    if not curves or not any(any(c for c in sets.values()) for sets in curves.values()):
        raise SystemExit(f"error: {path} holds no monitor curves (run_benchmark.py: was --monitor off?)")
    return curves


def plot(curves, path, metric="knn", title=""):
    from matplotlib.figure import Figure

    column = {"knn": 1, "ncm": 2}[metric]
    sets = list(dict.fromkeys(s for by_set in curves.values() for s in by_set))
    fig = Figure(figsize=(3.2 * len(sets), 3.0))
    axes = fig.subplots(1, len(sets), squeeze=False)[0]
    for ax, name in zip(axes, sets):
        for i, (variant, by_set) in enumerate(curves.items()):
            points = by_set.get(name) or []
            if points:
                ax.plot([p[0] for p in points], [p[column] for p in points], marker="o",
                        markersize=3, label=variant, color=f"C{i}")
        ax.set_title(name)
        ax.set_xlabel("update")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"leave-one-out {'k-NN' if metric == 'knn' else 'NCM'} accuracy (%)")
    axes[0].legend(fontsize="small")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", help="a run_benchmark.py or demo_pipeline.py output folder")
    p.add_argument("--out", default=None, help="PNG to write (default: RUN/monitor.png)")
    p.add_argument("--metric", choices=["knn", "ncm"], default="knn")
    args = p.parse_args(argv)
    out = args.out or os.path.join(args.run, "monitor.png")
    plot(load_curves(args.run), out, args.metric,
         title=f"monitor sets during tuning ({os.path.basename(os.path.abspath(args.run))})")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
