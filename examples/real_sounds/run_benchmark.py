"""Pretrain -> tune -> few-shot on the real-sounds benchmark (build it first with
build_real_sounds.py).

    python examples/real_sounds/run_benchmark.py DATA_DIR OUT_DIR [--mae ENCODER.pth]
        [--mae-updates 4000] [--tune-updates 800] [--seed 1] [--variant NAME=OVERRIDES]
        [--pool pool_nomusic] [--windows 8]

Stages (each a plain ``fairseq-hydra-train`` run; logs in OUT_DIR/logs/, checkpoints in
OUT_DIR/<stage>/checkpoints, tensorboard in OUT_DIR/tensorboard/<stage>):

1. ``mae``: MAE pretraining of the demo-sized AudioMAE (configs/mae_demo.yaml) on the
   unlabelled pool, clips shorter than the crop repeated (``task.pad_mode=repeat``);
   skipped with ``--mae``.
2. the tuning variants, two at a time side by side (one core each): by default
   ``uamix`` (configs/real_sounds.yaml) and ``none`` (the same without mixtures); each
   ``--variant NAME="key=value key=value"`` adds one with those overrides.
3. ``sup`` (``--supervised SET``, default fillets_voices; ``none`` skips it): the
   supervised reference, the MAE fine-tuned with the labels of 80% of one labelled set
   (``configs/finetune_demo.yaml``, 20 epochs, a seeded split per class), to show how
   much labels give on the *other* sets (on SET itself it is an in-set upper bound).
4. ``fewshot``: ``uamix-fewshot`` of the MAE start, every tuned encoder and the
   ``fbank_stats`` baseline on every labelled set (5-way, 1 and 5 shots, 10 queries,
   300 episodes, nearest class mean and logistic regression), paired against the MAE;
   ``--windows N`` embeds each clip over up to N consecutive crops instead of its first.

Every tuning run scores monitor sets at each validation (``--monitor``, default all four
labelled sets: leave-one-out k-NN and nearest-class-mean accuracy, never used to choose
a checkpoint: the last one is evaluated); the curves are printed at the end and are in
tensorboard (``monitor_knn`` for the first set, ``monitor_knn_<set>`` for the others).
OUT_DIR/results.json holds the settings, wall-clock per stage and every number.
This never runs in CI (it takes about an hour on 2 CPU cores).
"""

import argparse
import json
import os
import re
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "examples", "demo"))  # the main job's stage runner

from demo_pipeline import (PipelineError, cpu_model, export_encoder, monitor_curve,  # noqa: E402
                           train_stages)

SETS = ("speakers", "fillets_voices", "sonicpi_families", "ufoai_categories")
FEWSHOT = ["--ways", "5", "--shots", "1", "5", "--queries", "10", "--episodes", "300",
           "--seed", "0", "--pad-mode", "repeat", "--baseline", "fbank_stats", "--no-progress"]


def parse_variants(specs):
    variants = {"uamix": [], "none": ["criterion.mix_mode=none"]}
    for spec in specs or []:
        name, sep, overrides = spec.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z0-9_-]+", name):
            raise PipelineError(f"--variant {spec!r}: expected NAME=\"key=value ...\"")
        variants[name] = overrides.split()
    return variants


def stratified_split(manifest, out_dir, valid_fraction=0.2, seed=0):
    """Write OUT_DIR/{train,valid}.{tsv,label} from a labelled manifest: per class a
    seeded share of the clips (at least 2) to valid, the rest to train. Returns the
    number of training clips."""
    import random

    with open(manifest) as f:
        lines = f.read().splitlines()
    with open(os.path.splitext(manifest)[0] + ".label") as f:
        labels = f.read().splitlines()
    if len(labels) != len(lines) - 1:
        raise PipelineError(f"{manifest}: {len(lines) - 1} clips but {len(labels)} labels")
    by_class = {}
    for row, label in zip(lines[1:], labels):
        by_class.setdefault(label, []).append(row)
    rng = random.Random(seed)
    split = {"train": [], "valid": []}
    for label, rows in sorted(by_class.items()):
        rows = rows[:]
        rng.shuffle(rows)
        k = max(2, round(valid_fraction * len(rows)))
        split["valid"] += [(r, label) for r in rows[:k]]
        split["train"] += [(r, label) for r in rows[k:]]
    os.makedirs(out_dir, exist_ok=True)
    for name, items in split.items():
        with open(os.path.join(out_dir, f"{name}.tsv"), "w") as f:
            f.write(lines[0] + "\n" + "".join(r + "\n" for r, _ in items))
        with open(os.path.join(out_dir, f"{name}.label"), "w") as f:
            f.write("".join(label + "\n" for _, label in items))
    return len(split["train"])


def supervised_overrides(data, out, labelled_set, mae, seed, epochs=20, batch=16):
    """Overrides of the supervised reference: fine-tune the MAE on a split of a set."""
    if labelled_set not in SETS:
        raise PipelineError(f"--supervised {labelled_set!r}: expected one of {', '.join(SETS)} or none")
    split_dir = os.path.join(out, "supervised_data")
    train_clips = stratified_split(os.path.join(data, f"{labelled_set}.tsv"), split_dir, seed=0)
    per_epoch = -(-train_clips // batch)
    return [f"task.data={split_dir}", f"model.encoder_checkpoint={mae}",
            f"common.seed={seed}", f"dataset.batch_size={batch}",
            f"optimization.max_epoch={epochs}",
            f"lr_scheduler.warmup_updates={2 * per_epoch}",
            f"lr_scheduler.lr_period_updates={(epochs - 2) * per_epoch}"]


def check_data(data, pool="pool"):
    missing = [p for p in [f"{pool}/train.tsv", f"{pool}/valid.tsv"] +
               [f"{s}.tsv" for s in SETS] if not os.path.isfile(os.path.join(data, p))]
    if missing:
        raise PipelineError(f"{data} lacks {', '.join(missing)}: build it first with "
                            "python examples/real_sounds/build_real_sounds.py DATA_DIR "
                            "(a build before pool_nomusic existed: build it again)")


def run(args):
    data, out = os.path.abspath(args.data), os.path.abspath(args.out)
    if args.windows < 1:  # refused now, not after an hour of training
        raise PipelineError(f"--windows must be at least 1 (1 = the first crop), got {args.windows}")
    check_data(data, args.pool)
    if os.path.exists(os.path.join(out, "logs")) and not args.overwrite:
        raise PipelineError(f"{out} already holds a run; choose a new folder (fairseq "
                            "would resume from its checkpoints)")
    os.makedirs(out, exist_ok=True)
    monitor = args.monitor or ",".join(os.path.join(data, f"{s}.tsv") for s in SETS)
    monitored = [os.path.splitext(os.path.basename(p))[0] for p in monitor.split(",")]
    seconds, encoders = {}, {}
    common = [f"task.data={os.path.join(data, args.pool)}", "task.pad_mode=repeat",
              f"task.monitor_manifest='{monitor}'", f"common.seed={args.seed}"]
    if args.mae:
        encoders["mae"] = os.path.abspath(args.mae)
    else:
        seconds.update(train_stages([("mae", "mae_demo", common + [
            f"optimization.max_update={args.mae_updates}",
            "checkpoint.save_interval_updates=500", "dataset.validate_interval_updates=500",
            "lr_scheduler.warmup_updates=200"])], out, args.threads))
        encoders["mae"] = export_encoder("mae", out)

    tune = common + [f"model.audiomae_checkpoint={encoders['mae']}",
                     f"optimization.max_update={args.tune_updates}"]
    stages = [(name, "real_sounds", tune + extra)
              for name, extra in parse_variants(args.variant).items()]
    for i in range(0, len(stages), 2):  # two side by side on a 2-core machine
        seconds.update(train_stages(stages[i:i + 2], out, args.threads))
    for name, _, _ in stages:
        encoders[name] = export_encoder(name, out)
    if args.supervised != "none":
        sup = supervised_overrides(data, out, args.supervised, encoders["mae"], args.seed)
        seconds.update(train_stages([("sup", "finetune_demo", sup + [
            "task.pad_mode=repeat", f"task.monitor_manifest='{monitor}'"])], out, args.threads))
        encoders["sup"] = export_encoder("sup", out)

    from uamix_fairseq.evaluation.fewshot import main as fewshot_main

    fewshot = {}
    start = time.perf_counter()
    for s in SETS:
        argv = ["--manifest", os.path.join(data, f"{s}.tsv"), *FEWSHOT,
                "--windows", str(args.windows), "--cache-dir", os.path.join(out, "embeddings"),
                "--out", os.path.join(out, "fewshot", s)]
        for name, path in encoders.items():
            argv += ["--encoder", path, "--name", name]
        print(f"[fewshot] {s}", flush=True)
        if fewshot_main(argv) != 0:
            raise PipelineError(f"few-shot evaluation on {s} failed (see above)")
        with open(os.path.join(out, "fewshot", s, "fewshot.json")) as f:
            fewshot[s] = json.load(f)
    seconds["fewshot"] = time.perf_counter() - start

    suffixes = [""] + [f"_{m}" for m in monitored[1:]]
    curves = {}
    print("\nmonitor (leave-one-out k-NN / NCM %) during tuning:")
    for name, _, _ in stages:
        by_suffix = monitor_curve(os.path.join(out, "logs", f"{name}.log"), suffixes)
        curves[name] = {m: by_suffix[x] for m, x in zip(monitored, suffixes)}
        for m, curve in curves[name].items():
            print(f"  {name}, {m}: " + ", ".join(f"{u}: {k:.1f}/{n:.1f}" for u, k, n in curve))
    results = {"seed": args.seed, "machine": {"cpu": cpu_model(), "cores": os.cpu_count()},
               "seconds": {k: round(v, 1) for k, v in seconds.items()},
               "encoders": encoders, "variants": parse_variants(args.variant),
               "supervised": args.supervised, "pool": args.pool, "windows": args.windows,
               "monitor": monitor, "monitor_curves": curves, "fewshot": fewshot}
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    print(f"tables: {out}/fewshot/<set>/fewshot.csv (per class: fewshot_classes.csv)   "
          f"everything: {out}/results.json")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data", help="folder written by build_real_sounds.py")
    p.add_argument("out", help="folder for checkpoints, logs and results")
    p.add_argument("--mae", default=None, help="start from this AudioMAE encoder instead "
                   "of pretraining one")
    p.add_argument("--pool", default="pool", choices=["pool", "pool_nomusic"],
                   help="unlabelled clips of DATA to pretrain and tune on: the whole pool, "
                   "or the pool without the segments of music tracks (default: pool)")
    p.add_argument("--windows", type=int, default=1, help="few-shot embedding of each "
                   "clip: the mean over up to this many consecutive crops, weighted by "
                   "their real frames (uamix-fewshot --windows; default 1: the first crop)")
    p.add_argument("--mae-updates", type=int, default=4000)
    p.add_argument("--tune-updates", type=int, default=800)
    p.add_argument("--monitor", default=None, help="monitor manifests, comma-separated "
                   "(default: the four labelled sets of DATA)")
    p.add_argument("--variant", action="append", metavar="NAME=OVERRIDES",
                   help="extra tuning variant, e.g. plain=\"criterion.positive=nn\"")
    p.add_argument("--supervised", default="fillets_voices", help="labelled set whose "
                   "labels the supervised reference is fine-tuned on, or none "
                   "(default: fillets_voices)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args(argv)
    try:
        run(args)
    except PipelineError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
