"""N-way k-shot few-shot evaluation of frozen encoders on a labelled manifest.

Every clip is embedded once per encoder (``embed.cached_embeddings``: batched, cached,
progress bar); the episodes are drawn once from the labels and the seed, so all
encoders are scored on exactly the same episodes and their difference is paired.

    python -m uamix_fairseq.evaluation.fewshot --encoder before.pth --encoder after.pt \
        --name before --name after --manifest DATA/test.tsv --ways 5 --ways 10 \
        --shots 1 5 10 --queries 15 --episodes 600 --seed 0 --classifier ncm logreg \
        --num-frames 1024 --norm audioset --cache-dir emb_cache --out results/fewshot

Writes ``fewshot.json`` (settings, per-episode accuracies), ``fewshot.csv``,
``fewshot_classes.csv`` (accuracy per class, see ``class_accuracy``) and ``fewshot.png``
(accuracy against k) under ``--out`` and prints the table (``--per-class``: also the
per-class one).

With ``--attack-*`` options the query clips are also scored perturbed (see ``robust``):
clean and robust accuracy on the same episodes, side by side.
"""

import argparse
import logging
import os
import sys
import warnings
from dataclasses import asdict
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import EvaluationError
from ._cli import (add_attack_args, add_encoder_args, attack_config, baseline_entries,
                   check_row_names, cli_main, diagnose, embed_all, embed_baselines,
                   embed_config, encoder_configs, encoder_names, entries_for_report,
                   print_warnings, readout_specs, write_report)
from .classifiers import (CLASSIFIERS, knn_predict, logreg_predict, ncm_predict,
                          standardizer)
from .episodes import Episode, sample_episodes, single_label_targets, stack_episodes
from .report import Result, class_rows, format_class_table, write_class_csv

__all__ = ["class_accuracy", "main", "plan_episodes", "run_fewshot"]

logger = logging.getLogger("uamix_fairseq.evaluation")

Plan = Dict[Tuple[int, int], List[Episode]]


def plan_episodes(targets, class_names, ways_list: Sequence[int], shots_list: Sequence[int],
                  queries: int, episodes: int, seed: int, source: str = "the data") -> Plan:
    """Episodes for every (N, k), drawn before any embedding (a setting that cannot be
    drawn stops the run before the slow part)."""
    return {
        (ways, shots): sample_episodes(targets, ways, shots, queries, episodes, seed,
                                       class_names=class_names, source=source)
        for ways in ways_list for shots in shots_list
    }


STANDARDIZE = ("data", "support")


def class_accuracy(pred, query_labels, classes, num_classes: int):
    """Correct and scored query counts per global class, summed over episodes.

    ``pred`` and ``query_labels`` [E, m] hold episode labels, ``classes`` [E, ways] maps
    them to global class indices. Returns two int arrays [num_classes]; their ratio is
    the share of a class's queries classified correctly, pooled over the episodes that
    drew the class (each against whichever other classes that episode drew).
    """
    query_labels = np.asarray(query_labels)
    owner = np.take_along_axis(np.asarray(classes), query_labels, axis=1).ravel()
    correct = (np.asarray(pred) == query_labels).ravel()
    return (np.bincount(owner, weights=correct, minlength=num_classes).astype(np.int64),
            np.bincount(owner, minlength=num_classes).astype(np.int64))


def _classifiers(names: Sequence[str], knn_ks: Sequence[int], logreg_c: float,
                 stats=None):
    out = []
    for name in names:
        if name == "ncm":
            out.append(("ncm", lambda s, ys, q, k: ncm_predict(s, ys, q, k)))
        elif name == "logreg":
            out.append(("logreg", lambda s, ys, q, k: logreg_predict(
                s, ys, q, k, C=logreg_c, stats=stats)))
        elif name == "knn":
            for kk in dict.fromkeys(knn_ks):
                out.append((f"knn{kk}",
                            lambda s, ys, q, k, kk=kk: knn_predict(s, ys, q, kk, k)))
        else:
            raise EvaluationError(f"unknown classifier {name!r}; choose from "
                                  f"{', '.join(CLASSIFIERS)}")
    return out


def run_fewshot(embeddings: Sequence[np.ndarray], names: Sequence[str], plan: Plan,
                classifiers: Sequence[str] = ("ncm", "logreg"), knn_ks: Sequence[int] = (1,),
                logreg_c: float = 1.0, standardize: str = "data",
                max_chunk_elements: int = 10_000_000,
                robust_embeddings: Optional[Sequence[np.ndarray]] = None) -> List[Result]:
    """Accuracy of every encoder x classifier on every episode of ``plan``.

    ``embeddings[i]`` is encoder ``names[i]``'s ``[num_clips, D]`` matrix, rows in the
    order the episodes' clip indices refer to. Returns one ``Result`` per encoder,
    classifier and (N, k), holding the per-episode accuracies.

    ``standardize`` (logistic regression only): ``"data"`` z-scores features with the
    mean and standard deviation of all ``num_clips`` embeddings of the encoder (labels
    unused; the same for every episode), ``"support"`` with each episode's support set
    (from 1-5 clips per class these estimates are noisy, and features that happen to
    vary little across the support get amplified).

    ``robust_embeddings`` (optional, one ``[num_clips, D]`` matrix per encoder, e.g. the
    clean matrix with the attacked query clips' rows replaced): every episode is scored
    a second time with the same clean support and classifier but the queries' rows
    taken from it; the results then hold these ``robust_values`` too.
    """
    if len(embeddings) != len(names):
        raise ValueError(f"{len(embeddings)} embedding matrices for {len(names)} names")
    if robust_embeddings is not None and (
            len(robust_embeddings) != len(embeddings) or
            any(r is not None and np.shape(r) != np.shape(e)
                for r, e in zip(robust_embeddings, embeddings))):
        raise ValueError("robust_embeddings must match embeddings, one matrix (or None: "
                         "not attacked, e.g. a baseline) per encoder")
    if standardize not in STANDARDIZE:
        raise EvaluationError(f"standardize must be one of {STANDARDIZE}, got {standardize!r}")
    _classifiers(classifiers, knn_ks, logreg_c)  # unknown names fail before any work
    results = []
    num_classes = 1 + max((int(e.classes.max()) for eps in plan.values() for e in eps),
                          default=-1)
    for (ways, shots), episodes in plan.items():
        st = stack_episodes(episodes)
        width = st["support"].shape[1] + st["query"].shape[1]
        for i, (emb, name) in enumerate(zip(embeddings, names)):
            emb = np.asarray(emb)
            stats = standardizer(emb) if standardize == "data" else None
            specs = _classifiers(classifiers, knn_ks, logreg_c, stats)
            chunk = max(1, max_chunk_elements // (width * emb.shape[1]))
            queries = {"clean": emb}
            if robust_embeddings is not None and robust_embeddings[i] is not None:
                queries["robust"] = np.asarray(robust_embeddings[i])
            acc = {(label, kind): [] for label, _ in specs for kind in queries}
            counts = {label: np.zeros((2, num_classes), np.int64) for label, _ in specs}
            for start in range(0, len(episodes), chunk):
                sel = slice(start, start + chunk)
                support = emb[st["support"][sel]].astype(np.float64)
                for kind, source in queries.items():
                    query = source[st["query"][sel]].astype(np.float64)
                    for label, predict in specs:
                        pred = predict(support, st["support_labels"][sel], query, ways)
                        acc[label, kind].append(
                            (pred == st["query_labels"][sel]).mean(axis=1))
                        if kind == "clean":
                            counts[label] += class_accuracy(
                                pred, st["query_labels"][sel], st["classes"][sel],
                                num_classes)
            for label, _ in specs:
                robust = (np.concatenate(acc[label, "robust"]) if "robust" in queries
                          else None)
                results.append(Result(encoder=name, classifier=label, metric="accuracy",
                                      unit="episode", values=np.concatenate(acc[label, "clean"]),
                                      ways=ways, shots=shots, robust_values=robust,
                                      class_counts=tuple(counts[label])))
            logger.info("%d-way %d-shot, %s: %s", ways, shots, name, ", ".join(
                f"{r.classifier} {100 * r.summary.mean:.2f}%" + (
                    f" (attacked {100 * r.robust.mean:.2f}%)" if r.robust else "")
                for r in results[-len(specs):]))
    return results


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m uamix_fairseq.evaluation.fewshot",
        description="N-way k-shot evaluation of frozen AudioMAE encoders: the same seeded "
        "episodes for every encoder, mean accuracy with a 95% Student-t interval over "
        "episodes, and paired differences against the first encoder.")
    add_encoder_args(p)
    g = p.add_argument_group("data and episodes")
    g.add_argument("--manifest", required=True, help="fairseq manifest of the clips "
                   "episodes are drawn from (e.g. DATA/test.tsv)")
    g.add_argument("--labels", default=None, help="label file, one class per manifest "
                   "clip line (default: the manifest's path with .label)")
    g.add_argument("--ways", type=int, nargs="+", action="extend", default=None,
                   metavar="N", help="classes per episode; repeat or list several "
                   "(default: 5)")
    g.add_argument("--shots", type=int, nargs="+", action="extend", default=None,
                   metavar="K", help="support clips per class (default: 1 5 10)")
    g.add_argument("--queries", type=int, default=15,
                   help="query clips per class (default: 15)")
    g.add_argument("--episodes", type=int, default=600, help="episodes per (N, k) "
                   "(default: 600)")
    g.add_argument("--seed", type=int, default=0, help="episode seed (default: 0)")
    g.add_argument("--classifier", nargs="+", action="extend", default=None,
                   choices=list(CLASSIFIERS), help="ncm: nearest class mean (cosine); "
                   "logreg: multinomial logistic regression on standardised features; "
                   "knn: cosine k-NN (default: ncm logreg)")
    g.add_argument("--standardize", choices=list(STANDARDIZE), default="data",
                   help="logreg feature scaling: z-score with the statistics of all clips "
                   "of --manifest (data, labels unused) or of each episode's support "
                   "set (support) (default: data)")
    g.add_argument("--per-class", action="store_true",
                   help="also print the clean accuracy of every class (pooled over the "
                   "episodes that drew it) and each row's difference from the --reference "
                   "row (default: the first encoder); fewshot_classes.csv is written "
                   "either way")
    g.add_argument("--knn", type=int, nargs="+", default=[1], metavar="K",
                   help="neighbours for --classifier knn, capped at the support size "
                   "(default: 1)")
    add_attack_args(p, "query clips of the episodes (each distinct query clip is "
                    "attacked once, against the class means of all clips of the "
                    "manifest, and reused in every episode and (N, k))")
    return p


def _robust_embeddings(args, cfgs, embeddings, targets, num_classes, plan, attack,
                       source_cfg=None):
    """Per encoder: its clean matrix with the query clips' rows attacked."""
    from ..tools.embed import cached_embeddings
    from .robust import ClassMeanLoss, _entry_key, attack_files, query_clips

    clips = query_clips(plan)
    clean = {_entry_key(p, c): e for p, c, e in zip(args.encoder, cfgs, embeddings)}

    def surrogate(path, cfg):
        emb = clean.get(_entry_key(path, cfg))
        if emb is None:  # the transfer source: its own clean embeddings
            emb = cached_embeddings(path, args.manifest, cfg, cache_dir=args.cache_dir,
                                    device=args.device, progress=not args.no_progress)
        return ClassMeanLoss(emb, targets, num_classes, labels=targets,
                             temperature=attack.temperature, self_in_pool=True,
                             device=args.device)

    attacked = attack_files(args.encoder, args.manifest, clips, cfgs, attack, surrogate,
                            args.device, progress=not args.no_progress,
                            source_cfg=source_cfg)
    out = []
    for emb, adv in zip(embeddings, attacked):
        robust = np.array(emb, copy=True)
        robust[clips] = adv
        out.append(robust)
    return out, len(clips)


def _run(args) -> int:
    ways_list = sorted(set(args.ways or [5]))
    shots_list = sorted(set(args.shots or [1, 5, 10]))
    classifiers = list(dict.fromkeys(args.classifier or ["ncm", "logreg"]))
    if any(k < 1 for k in args.knn):
        raise EvaluationError(f"--knn values must be at least 1, got {args.knn}")
    names = encoder_names(args.encoder, args.name, readout_specs(args, args.encoder))
    embed_config(args)  # option errors before any file is read
    attack = attack_config(args)

    from ..labels import label_path_for, read_labels

    label_path = args.labels or label_path_for(args.manifest)
    labels = read_labels(args.manifest, label_path)
    class_names, targets = single_label_targets(labels, source=label_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            plan = plan_episodes(targets, class_names, ways_list, shots_list,
                                 args.queries, args.episodes, args.seed, source=label_path)
        finally:
            print_warnings(caught)
    cfgs = encoder_configs(args, args.encoder)
    baselines = baseline_entries(args, cfgs)
    reference = check_row_names(names, baselines, args.reference)
    source_cfg = None
    if attack and attack.source:
        from ..tools.embed import load_encoder

        source_cfg = embed_config(args, cfgs[0].num_frames)
        load_encoder(attack.source, source_cfg)
    embeddings = embed_all(args.encoder, names, args.manifest, cfgs, args, len(labels))
    base_feats = embed_baselines(baselines, args.manifest, args, len(labels))
    robust = None
    if attack:
        robust, num_attacked = _robust_embeddings(args, cfgs, embeddings, targets,
                                                  len(class_names), plan, attack,
                                                  source_cfg)
        robust = robust + [None] * len(baselines)  # baselines are scored clean only
    rows = names + [b[1] for b in baselines]
    results = run_fewshot(embeddings + base_feats, rows, plan, classifiers, args.knn,
                          args.logreg_c, args.standardize, robust_embeddings=robust)

    from .diagnostics import manifest_durations

    durations = manifest_durations(args.manifest, cfgs[0].sample_rate)
    diagnostics = diagnose(rows, embeddings + base_feats, durations)
    settings = {
        "command": "fewshot", "manifest": os.path.abspath(args.manifest),
        "labels": os.path.abspath(label_path), "num_clips": len(labels),
        "num_classes": len(class_names), "ways": ways_list, "shots": shots_list,
        "queries": args.queries, "episodes": args.episodes, "seed": args.seed,
        "classifiers": classifiers, "knn": args.knn if "knn" in classifiers else None,
        "logreg_c": args.logreg_c,
        "standardize": args.standardize if "logreg" in classifiers else None,
        "embedding": asdict(cfgs[0]),
        "embeddings": {n: asdict(c) for n, c in zip(names, cfgs)},
        "baselines": {name: key for key, name, _ in baselines},
        "reference": reference,
        "episode_stream": "numpy default_rng([seed, N, k, queries]) per setting",
        "attack": attack.settings(num_attacked) if attack else None,
    }
    title = (f"few-shot accuracy on {os.path.basename(args.manifest)} "
             f"({args.episodes} episodes, {args.queries} queries/class, seed {args.seed})")
    entries = entries_for_report(names, args.encoder, cfgs, baselines)
    code = write_report(results, rows, entries, args, "fewshot", settings, title,
                        attack, "queries", plot=True, diagnostics=diagnostics,
                        diagnostics_where=f"{len(labels)} clips of "
                        f"{os.path.basename(args.manifest)}", reference=reference)
    order = [reference] + [r for r in rows if r != reference]
    per_class = class_rows(results, order, class_names)
    path = os.path.join(args.out, "fewshot_classes.csv")
    write_class_csv(path, per_class)
    if args.per_class:
        print("\n" + format_class_table(per_class, order), flush=True)
    print(f"wrote {path}", file=sys.stderr)
    return code


def main(argv: Optional[Sequence[str]] = None) -> int:
    return cli_main(_run, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
