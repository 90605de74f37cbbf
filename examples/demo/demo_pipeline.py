"""The README's main job: tune a pretrained AudioMAE, measure the few-shot gain.

    python examples/demo/demo_pipeline.py OUT_DIR [--start shipped|scratch] [--quick]
        [--joint] [--seed 1]

Stages, each a plain ``fairseq-hydra-train`` run with a yaml from ``configs/`` (the log
of each is in OUT_DIR/logs/, its checkpoints in OUT_DIR/<stage>/checkpoints, its
tensorboard events in OUT_DIR/tensorboard/<stage>):

1. ``corpus``: the synthetic demo corpus (``demo_data``): seen classes for pretraining
   and tuning (labels unused, except by ``sup``), held-out classes for the evaluation,
   and further clips of the seen classes (``seen_test``), never trained on.
2. ``mae``: the start of every tuning. By default (``--start shipped``) the AudioMAE
   shipped in ``pretrained/`` (pretrained on permissively licensed real recordings,
   pretrained/README.md), as a user starts from a published checkpoint; with
   ``--start scratch``, masked-autoencoder pretraining on the corpus from a random
   start (configs/mae_demo.yaml).
3. ``uamix``: uaMix tuning of the MAE encoder (configs/demo.yaml, T-CutMix), and
4. ``none``: the same tuning without mixtures (``criterion.mix_mode=none``), side by
   side with ``uamix`` (one process each; ``--sequential`` to time them alone).
5. ``sup``: the supervised reference: the same MAE encoder fine-tuned with the seen
   classes' labels (configs/finetune_demo.yaml: a linear head on the pooled embedding),
   with the tunings' freezing schedule (the same trainable blocks) and number of
   updates: what labels give, where the tunings have none.
6. ``joint`` (with ``--joint``): the naive baseline, MAE + NNCLR losses on the whole
   encoder from the same random start (configs/joint_demo.yaml), stopped after the
   wall-clock time of stages 2 and 3 together (equal compute); needs ``--start scratch``.
7. ``fewshot``: N-way k-shot evaluation (``uamix-fewshot``) of every encoder, plus a
   randomly initialised one and the no-learning fbank baseline for reference, on the
   held-out classes (OUT_DIR/fewshot/) and on the held-out clips of the seen classes
   (OUT_DIR/fewshot_seen/): table, JSON, CSV, plot in each.

Every encoder is exported to OUT_DIR/encoders/<stage>.pth (AudioMAE layout).
OUT_DIR/results.json records the wall-clock time of every stage, the settings, the
few-shot results and the monitor curves of the tunings and the supervised reference
(leave-one-out k-NN and NCM on the held-out classes and clips at every validation).
``--quick`` shrinks everything (a tiny corpus, model and a few updates) to check the
whole path in well under a minute; its numbers mean nothing.
"""

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import threading
import time
from typing import Dict, List, Optional, Sequence

from uamix_fairseq.modules.audiomae import EncoderConfig, write_random_audiomae

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG_DIR = os.path.join(REPO, "configs")
SHIPPED = os.path.join(REPO, "pretrained", "audiomae_6x192_permissive.pth")
STARTS = ("shipped", "scratch")
USER_DIR = os.path.join(REPO, "uamix_fairseq")

# Shared by every stage: the demo's clip crops and the encoder the MAE stage builds.
NUM_FRAMES = 128
ENCODER = {"embed_dim": 192, "depth": 6, "num_heads": 3}

FULL = {
    "corpus": {"clips_per_class": 20, "heldout_clips_per_class": 30,
               "seen_test_clips_per_class": 20, "seconds": 3.0},
    "mae_updates": 1500, "tune_updates": 300, "tune_unfreeze": 100,
    "encoder": ENCODER, "stage_overrides": [], "head_overrides": [], "decoder_overrides": [],
    "fewshot": ["--ways", "5", "--shots", "1", "5", "--queries", "10", "--episodes", "300"],
}
QUICK = {
    "corpus": {"clips_per_class": 2, "heldout_clips_per_class": 3,
               "seen_test_clips_per_class": 3, "seconds": 0.6},
    "mae_updates": 3, "tune_updates": 3, "tune_unfreeze": 2,
    "encoder": {"embed_dim": 32, "depth": 2, "num_heads": 1},
    "stage_overrides": ["dataset.batch_size=4", "common.log_interval=1",
                        "dataset.validate_interval_updates=3",
                        "checkpoint.save_interval_updates=3",
                        "lr_scheduler.warmup_updates=1"],
    "head_overrides": ["model.proj_hidden_dim=32", "model.pred_hidden_dim=32",
                       "model.proj_out_dim=16"],
    "decoder_overrides": ["model.decoder_embed_dim=16", "model.decoder_depth=1",
                          "model.decoder_num_heads=1"],
    "fewshot": ["--ways", "5", "--shots", "1", "--queries", "2", "--episodes", "5"],
}


class PipelineError(RuntimeError):
    pass


def _train_command() -> List[str]:
    exe = os.path.join(os.path.dirname(sys.executable), "fairseq-hydra-train")
    return [exe] if os.path.exists(exe) else [sys.executable, "-m", "fairseq_cli.hydra_train"]


def _stream(proc, log_file, stage: str, ended: Dict[str, float]):
    """Copy the run's output to its log; show validation lines and every 100th update.
    Records in ``ended`` when the process has finished."""
    for line in proc.stdout:
        log_file.write(line)
        show = "][valid][" in line
        if "][train_inner][" in line:
            step = re.search(r"num_updates=(\d+)", line)
            show = step is not None and int(step.group(1)) % 100 == 0
        if show:
            print(f"  [{stage}] {line.split('] - ', 1)[-1].strip()}", flush=True)
    proc.wait()
    ended[stage] = time.perf_counter()


def train_stages(stages: Sequence[tuple], out_dir: str, threads: int) -> Dict[str, float]:
    """Run fairseq-hydra-train stages ``(name, config_name, overrides)`` side by side
    (one process each; give a list of one to run it alone); returns each stage's
    wall-clock seconds. A failed stage stops the pipeline with the end of its log."""
    running, ended = [], {}
    for stage, config_name, overrides in stages:
        save_dir = os.path.join(out_dir, stage, "checkpoints")
        args = [*_train_command(), "--config-dir", CONFIG_DIR, "--config-name", config_name,
                f"common.user_dir={USER_DIR}", f"checkpoint.save_dir={save_dir}",
                f"common.tensorboard_logdir={os.path.join(out_dir, 'tensorboard', stage)}",
                *overrides]
        log_path = os.path.join(out_dir, "logs", f"{stage}.log")
        os.makedirs(os.path.dirname(log_path), exist_ok=True)
        work = os.path.join(out_dir, stage)
        os.makedirs(work, exist_ok=True)
        # The repo root first: Hydra then finds this checkout's hydra_plugins/ (plain
        # key=value for every field) even where the installed copy predates it.
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONWARNINGS="ignore",
                   PYTHONPATH=os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")]))
        print(f"[{stage}] fairseq-hydra-train --config-name {config_name} (log: {log_path})",
              flush=True)
        log_file = open(log_path, "w")
        log_file.write("$ " + " ".join(args) + "\n")
        log_file.flush()
        proc = subprocess.Popen(args, cwd=work, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        pump = threading.Thread(target=_stream, args=(proc, log_file, stage, ended),
                                daemon=True)
        pump.start()
        running.append((stage, proc, pump, log_file, log_path, time.perf_counter()))
    seconds, failed = {}, []
    for stage, proc, pump, log_file, log_path, start in running:
        code = proc.wait()
        pump.join()
        log_file.close()
        seconds[stage] = ended[stage] - start
        if code != 0:
            failed.append((stage, code, log_path))
        else:
            print(f"[{stage}] done in {seconds[stage]:.0f} s", flush=True)
    if failed:
        stage, code, log_path = failed[0]
        with open(log_path) as f:
            tail = "".join(f.readlines()[-30:])
        raise PipelineError(f"stage {stage} failed (exit {code}); end of {log_path}:\n{tail}")
    return seconds


def updates_done(out_dir: str, stage: str) -> int:
    """The last update number a stage's log reports."""
    with open(os.path.join(out_dir, "logs", f"{stage}.log")) as f:
        found = re.findall(r"num_updates[ =](\d+)", f.read())
    return int(found[-1]) if found else 0


def monitor_curve(log_path, suffixes=("",)):
    """{suffix: [(update, k-NN, NCM)]} of every validation in a stage's log, for the
    monitor sets whose keys end in each suffix ("" = the first set)."""
    out = {suffix: [] for suffix in suffixes}
    with open(log_path) as f:
        for line in f:
            upd = re.search(r"num_updates (\d+)", line)
            if "valid on 'valid' subset" not in line or not upd:
                continue
            for suffix in suffixes:
                knn = re.search(rf"monitor_knn{suffix} ([0-9.]+)", line)
                ncm = re.search(rf"monitor_ncm{suffix} ([0-9.]+)", line)
                if knn and ncm:
                    out[suffix].append((int(upd.group(1)), float(knn.group(1)),
                                        float(ncm.group(1))))
    return out


def export_encoder(stage: str, out_dir: str) -> str:
    from uamix_fairseq.tools.export import main as export_main

    path = os.path.join(out_dir, "encoders", f"{stage}.pth")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    ckpt = os.path.join(out_dir, stage, "checkpoints", "checkpoint_last.pt")
    if export_main([ckpt, path]) != 0:
        raise PipelineError(f"could not export the encoder of {ckpt}")
    return path


STAGE_DIRS = ("corpus", "mae", "uamix", "none", "sup", "joint", "encoders", "embeddings",
              "fewshot", "fewshot_seen", "logs", "tensorboard")


def _clear_previous_run(out_dir: str, overwrite: bool):
    """fairseq resumes from checkpoint_last.pt when it finds one, so a second run into
    the same folder would silently reuse the first one's training: refuse, or delete
    the previous run's folders with ``overwrite``."""
    import shutil

    found = [d for d in STAGE_DIRS if os.path.exists(os.path.join(out_dir, d))]
    if not found:
        return
    if not overwrite:
        raise PipelineError(f"{out_dir} already holds a run ({', '.join(found)}); choose "
                            "a new folder or pass --overwrite to delete those and start again")
    for d in found:
        shutil.rmtree(os.path.join(out_dir, d))
    results = os.path.join(out_dir, "results.json")
    if os.path.exists(results):
        os.remove(results)


def run_pipeline(out_dir: str, quick: bool = False, joint: bool = False, seed: int = 1,
                 threads: int = 1, overwrite: bool = False, parallel: bool = True,
                 start: str = "shipped") -> Dict:
    from demo_data import make_demo_corpus
    from uamix_fairseq.evaluation.fewshot import main as fewshot_main

    if start not in STARTS:
        raise PipelineError(f"unknown start {start!r}; choose one of {', '.join(STARTS)}")
    if joint and start != "scratch":
        raise PipelineError("--joint compares with MAE pretraining from scratch at equal "
                            "compute: add --start scratch")
    plan = QUICK if quick else FULL
    out_dir = os.path.abspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    _clear_previous_run(out_dir, overwrite)
    timings = {}
    t0 = time.perf_counter()

    corpus = os.path.join(out_dir, "corpus")
    tic = time.perf_counter()
    summary = make_demo_corpus(corpus, seed=0, **plan["corpus"])
    timings["corpus"] = time.perf_counter() - tic
    print(f"[corpus] {summary['num_train']} train + {summary['num_valid']} valid clips of "
          f"{len(summary['seen_classes'])} seen classes; {summary['num_heldout']} clips of "
          f"{len(summary['heldout_classes'])} held-out classes ({timings['corpus']:.0f} s)",
          flush=True)

    # One random initialisation, the start of both the MAE and the joint run, and the
    # "random" row of the table (the same architecture, never trained).
    enc = plan["encoder"] if start == "scratch" else shipped_shape()
    encoders = {"random": os.path.join(out_dir, "encoders", "random.pth")}
    os.makedirs(os.path.dirname(encoders["random"]), exist_ok=True)
    write_random_audiomae(encoders["random"], EncoderConfig(num_frames=NUM_FRAMES, **enc),
                          seed=seed, with_decoder=False)

    common = [f"task.data={corpus}", f"task.num_frames={NUM_FRAMES}",
              f"common.seed={seed}", *plan["stage_overrides"]]
    from_random = [f"model.audiomae_checkpoint={encoders['random']}"]
    head, decoder = plan["head_overrides"], plan["decoder_overrides"]

    if start == "scratch":
        timings.update(train_stages([("mae", "mae_demo", common + from_random + decoder + [
            f"optimization.max_update={plan['mae_updates']}"])], out_dir, threads))
        encoders["mae"] = export_encoder("mae", out_dir)
    else:
        encoders["mae"] = SHIPPED
        print(f"[mae] starting from the shipped AudioMAE {os.path.relpath(SHIPPED, REPO)}",
              flush=True)

    # The head warm-up, then every block (configs/demo.yaml; the encoder's depth here,
    # so that --quick's smaller encoder follows the same schedule).
    schedule = f"model.freeze_schedule='[(0, 0), ({plan['tune_unfreeze']}, {enc['depth']})]'"
    # Visible while training: leave-one-out k-NN and class-mean accuracy on the held-out
    # classes and on the held-out clips of the seen ones, logged at every validation
    # (never used to pick a checkpoint).
    monitor = ("task.monitor_manifest='" + ",".join(
        os.path.join(corpus, f"{split}.tsv") for split in ("heldout", "seen_test")) + "'")
    tune = common + head + [f"model.audiomae_checkpoint={encoders['mae']}",
                            f"optimization.max_update={plan['tune_updates']}", schedule, monitor]
    # Independent runs: side by side, one core each, on a 2-core machine.
    tunings = [("uamix", "demo", tune), ("none", "demo", tune + ["criterion.mix_mode=none"])]
    if parallel:
        timings.update(train_stages(tunings, out_dir, threads))
    else:
        for stage in tunings:
            timings.update(train_stages([stage], out_dir, threads))
    encoders["uamix"] = export_encoder("uamix", out_dir)
    encoders["none"] = export_encoder("none", out_dir)
    # common last: --quick's shrunk batch and intervals win over the stage's own.
    timings.update(train_stages([("sup", "finetune_demo", supervised_overrides(
        encoders["mae"], plan["tune_updates"], schedule) + common + [monitor])],
        out_dir, threads))
    encoders["sup"] = export_encoder("sup", out_dir)
    if joint:
        # The same wall-clock as MAE + uaMix, so the comparison is at equal compute;
        # the cosine schedule is planned for as many updates as those two stages made.
        budget_hours = (timings["mae"] + timings["uamix"]) / 3600
        updates = plan["mae_updates"] + plan["tune_updates"]
        timings.update(train_stages([("joint", "joint_demo", common + from_random + head + decoder + [
            f"optimization.max_update={updates}",
            f"optimization.stop_time_hours={budget_hours:.6f}",
            f"model.freeze_schedule='[(0, {enc['depth']})]'"])], out_dir, threads))
        encoders["joint"] = export_encoder("joint", out_dir)

    names = ["random", "mae", "none", "uamix", "sup"] + (["joint"] if joint else [])
    fewshot = {}
    tic = time.perf_counter()
    for folder, split, what in (("fewshot", "heldout", "the held-out classes"),
                                ("fewshot_seen", "seen_test", "held-out clips of the seen "
                                 "classes")):
        argv = ["--manifest", os.path.join(corpus, f"{split}.tsv"),
                "--num-frames", str(NUM_FRAMES), "--out", os.path.join(out_dir, folder),
                "--seed", "0", "--no-progress",
                "--cache-dir", os.path.join(out_dir, "embeddings"), *plan["fewshot"],
                # Paired differences against the MAE, the start of every tuning (the
                # random row stays for reference), and the no-learning spectrum baseline.
                "--reference", "mae", "--baseline", "fbank_stats"]
        for name in names:
            argv += ["--encoder", encoders[name], "--name", name]
        print(f"[{folder}] uamix-fewshot on {what}: {', '.join(names)}", flush=True)
        if fewshot_main(argv) != 0:
            raise PipelineError("the few-shot evaluation failed (see the error above)")
        with open(os.path.join(out_dir, folder, "fewshot.json")) as f:
            fewshot[split] = json.load(f)
    timings["fewshot"] = time.perf_counter() - tic
    timings["total"] = time.perf_counter() - t0
    # The monitor of the held-out classes ("" = the first set) and of the held-out clips
    # of the seen ones, as examples/real_sounds/plot_monitor.py reads them.
    curves = {}
    for stage in ("uamix", "none", "sup"):
        by_suffix = monitor_curve(os.path.join(out_dir, "logs", f"{stage}.log"), ("", "_seen_test"))
        curves[stage] = {"heldout": by_suffix[""], "seen_test": by_suffix["_seen_test"]}
    results = {
        "quick": quick, "start": start, "seed": seed, "threads": threads,
        "parallel_tuning": parallel,
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(),
                    "python": platform.python_version()},
        "seconds": {k: round(v, 1) for k, v in timings.items()},
        "updates": {stage: updates_done(out_dir, stage) for stage in encoders
                    if stage != "random" and encoders[stage] != SHIPPED},
        "encoders": encoders, "corpus": summary,
        "fewshot": fewshot["heldout"], "fewshot_seen": fewshot["seen_test"],
        "monitor_curves": curves,
    }
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    _print_summary(out_dir, results)
    return results


def shipped_shape() -> Dict[str, int]:
    """The shipped encoder's width, depth and heads (the random row's architecture)."""
    from uamix_fairseq.modules.audiomae import read_checkpoint_file

    if not os.path.isfile(SHIPPED):
        raise PipelineError(f"the shipped AudioMAE {SHIPPED} is missing; restore it from "
                            "the repository (git checkout -- pretrained/) or pass "
                            "--start scratch")
    cfg = read_checkpoint_file(SHIPPED)["uamix_encoder_config"]
    return {k: cfg[k] for k in ("embed_dim", "depth", "num_heads")}


def supervised_overrides(mae: str, updates: int, schedule: str) -> List[str]:
    """The ``sup`` stage: fine-tune ``mae`` on the seen classes' labels (train.tsv and
    its .label) for ``updates`` updates with the tunings' freezing ``schedule`` and
    their batch, warm-up and validation rhythm (configs/demo.yaml); lr, layer decay,
    SpecAugment and label smoothing are configs/finetune_demo.yaml's."""
    return [f"model.encoder_checkpoint={mae}", schedule,
            "optimization.max_epoch=0", f"optimization.max_update={updates}",
            "dataset.batch_size=32", "lr_scheduler.warmup_updates=30",
            "lr_scheduler.lr_period_updates=-1",  # one half cosine over the whole run
            "dataset.validate_interval=1000", "dataset.validate_interval_updates=100",
            "checkpoint.save_interval=1000", "checkpoint.save_interval_updates=100",
            "checkpoint.keep_interval_updates=2"]


def cpu_model(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The CPU's model name, with its family, model and widest x86 vector extension where
    /proc/cpuinfo gives them, e.g. "AMD EPYC (family 25, model 17, avx512f)"; elsewhere
    the machine type (e.g. "aarch64"). Two CPUs of one name can take different vector
    code paths in torch (AVX-512 or AVX2, summing in another order), so a tuning repeats
    exactly only on the same kind (README, "Reproducibility")."""
    fields = {}
    try:
        with open(cpuinfo, errors="replace") as f:
            for line in f:
                key, sep, value = line.partition(":")
                if not sep:
                    if fields:  # the end of the first processor's block
                        break
                    continue
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    name = fields.get("model name") or platform.processor() or platform.machine() or "unknown"
    flags = fields.get("flags", "").split()
    vector = next((v for v in ("avx512f", "avx2", "avx", "sse4_2") if v in flags), None)
    extra = [f"family {fields['cpu family']}" if "cpu family" in fields else None,
             f"model {fields['model']}" if "model" in fields else None, vector]
    extra = [e for e in extra if e]
    return f"{name} ({', '.join(extra)})" if extra else name


def _print_summary(out_dir: str, results: Dict):
    s = results["seconds"]
    print("\nwall-clock (s): " + ", ".join(f"{k} {v:.0f}" for k, v in s.items()))
    print("updates:        " + ", ".join(f"{k} {v}" for k, v in results["updates"].items()))
    print(f"tables, plots:  {os.path.join(out_dir, 'fewshot')} (held-out classes), "
          f"{os.path.join(out_dir, 'fewshot_seen')} (held-out clips of the seen classes): "
          "fewshot.csv, fewshot.png")
    print(f"checkpoints:    {out_dir}/<stage>/checkpoints   encoders: {out_dir}/encoders")
    print("monitor (leave-one-out k-NN / NCM %, update: value), held-out classes | held-out clips of the seen ones:")
    for stage, sets in results["monitor_curves"].items():
        print(f"  {stage:6s} " + " | ".join(", ".join(f"{u}: {k:.1f}/{n:.1f}" for u, k, n in curve)
                                       for curve in sets.values()))
    print(f"tensorboard:    tensorboard --logdir {os.path.join(out_dir, 'tensorboard')}")
    print(f"everything:     {os.path.join(out_dir, 'results.json')}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python examples/demo/demo_pipeline.py",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", help="folder for the corpus, checkpoints, logs, results")
    parser.add_argument("--start", choices=STARTS, default="shipped",
                        help="start of the tunings: the AudioMAE shipped in pretrained/ "
                        "(default) or MAE pretraining on the demo corpus from scratch")
    parser.add_argument("--quick", action="store_true",
                        help="tiny corpus, model and runs: checks the path, not the method")
    parser.add_argument("--joint", action="store_true",
                        help="also train the naive MAE + NNCLR baseline (about as long as "
                        "the MAE and uaMix stages together)")
    parser.add_argument("--seed", type=int, default=1, help="training seed of every stage")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads per training run (1: see README, Performance)")
    parser.add_argument("--overwrite", action="store_true",
                        help="delete a previous run in OUT_DIR first (otherwise refused, "
                        "because fairseq would resume from its checkpoints)")
    parser.add_argument("--sequential", action="store_true",
                        help="run the uamix and none tunings one after the other (default: "
                        "side by side, one process each; use this to time them alone)")
    args = parser.parse_args(argv)
    try:
        run_pipeline(args.out_dir, args.quick, args.joint, args.seed, args.threads,
                     args.overwrite, parallel=not args.sequential, start=args.start)
    except PipelineError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
