"""Linear probe and k-NN on frozen pooled embeddings: train on one manifest, test on
another.

Single-label data (one class per clip): multinomial logistic regression and cosine
k-NN, scored by accuracy; the interval and the paired difference are over test clips
(per-clip correctness, so the t interval is the normal approximation of the binomial
one). Multi-label data (any clip of either split with several classes): one-vs-rest
logistic regression and k-NN label fractions, scored by mAP over the classes that have
a positive test clip; the interval and the paired difference are over those classes.

    python -m uamix_fairseq.evaluation.probe --encoder before.pth --encoder after.pt \
        --train-manifest DATA/train.tsv --test-manifest DATA/test.tsv --knn 1 5 20 \
        --num-frames 1024 --cache-dir emb_cache --out results/probe

Writes ``probe.json`` (settings and per-clip or per-class values) and ``probe.csv``
under ``--out`` and prints the table.

With ``--attack-*`` options the test clips are also scored perturbed (see ``robust``):
clean and robust accuracy (or mAP) on the same clips, side by side.
"""

import argparse
import logging
import os
import sys
import warnings
from dataclasses import asdict
from typing import List, Optional, Sequence, Tuple

import numpy as np

from . import EvaluationError
from ._cli import (add_attack_args, add_encoder_args, attack_config, baseline_entries,
                   check_row_names, cli_main, diagnose, embed_all, embed_baselines,
                   embed_config, encoder_configs, encoder_names, entries_for_report,
                   print_warnings, readout_specs, write_report)
from .classifiers import (fit_logreg, fit_ovr_logreg, knn_predict, knn_scores,
                          mean_average_precision, multi_hot)
from .report import Result

__all__ = ["main", "run_probe"]

logger = logging.getLogger("uamix_fairseq.evaluation")


def is_multi_label(train_labels, test_labels) -> bool:
    return any(len(r) > 1 for r in list(train_labels) + list(test_labels))


def single_label_indices(train_labels, test_labels):
    """Sorted train classes and the class index of every train and test clip (-1 for
    a test class the train split lacks)."""
    train_classes = sorted({r[0] for r in train_labels})
    index = {c: i for i, c in enumerate(train_classes)}
    ytr = np.array([index[r[0]] for r in train_labels])
    yte = np.array([index.get(r[0], -1) for r in test_labels])
    return train_classes, ytr, yte


def multi_label_targets(train_labels, test_labels):
    """All classes of both splits and the 0/1 target matrices of train and test."""
    classes = sorted({c for r in list(train_labels) + list(test_labels) for c in r})
    return classes, multi_hot(train_labels, classes), multi_hot(test_labels, classes)


def run_probe(train_embeddings: Sequence[np.ndarray], test_embeddings: Sequence[np.ndarray],
              names: Sequence[str], train_labels: Sequence[Sequence[str]],
              test_labels: Sequence[Sequence[str]], knn_ks: Sequence[int] = (1, 5, 20),
              logreg_c: float = 1.0, logreg: bool = True,
              robust_test_embeddings: Optional[Sequence[np.ndarray]] = None
              ) -> Tuple[List[Result], dict]:
    """Results per encoder and classifier, and facts about the data for the report.

    ``train_embeddings[i]``/``test_embeddings[i]`` are encoder ``names[i]``'s matrices,
    rows in the order of ``train_labels``/``test_labels`` (lists of class names).
    ``robust_test_embeddings`` (optional, shaped like ``test_embeddings``): the test
    clips under attack, scored by the same fitted classifiers; the results then hold
    these ``robust_values`` too (paired with the clean ones by clip or class).
    """
    if not train_labels or not test_labels:
        raise EvaluationError("the train and the test split both need clips")
    multi = is_multi_label(train_labels, test_labels)
    info = {"multi_label": multi, "num_train": len(train_labels),
            "num_test": len(test_labels)}
    results = []
    robust = list(robust_test_embeddings) if robust_test_embeddings is not None \
        else [None] * len(names)
    if len(robust) != len(names):
        raise ValueError("robust_test_embeddings must have one matrix per encoder")
    if not multi:
        train_classes, ytr, yte = single_label_indices(train_labels, test_labels)
        if len(train_classes) < 2:
            raise EvaluationError(f"the train split has a single class "
                                  f"({train_classes[0]}); a classifier needs at least 2")
        unseen = sorted({r[0] for r in test_labels} - set(train_classes))
        if unseen:
            unseen_set = set(unseen)
            n_clips = sum(r[0] in unseen_set for r in test_labels)
            warnings.warn(f"{len(unseen)} test class(es) never occur in the train split, "
                          f"so their {n_clips} test clip(s) count as errors: "
                          f"{', '.join(unseen[:10])}{' ...' if len(unseen) > 10 else ''}")
        info.update(num_classes=len(train_classes), unseen_test_classes=unseen)
        for xtr, xte, xadv, name in zip(train_embeddings, test_embeddings, robust, names):
            if logreg:
                model = fit_logreg(xtr, ytr, len(train_classes), C=logreg_c)
                adv = None if xadv is None else model.predict(xadv) == yte
                results.append(Result(name, "logreg", "accuracy", "clip",
                                      model.predict(xte) == yte, robust_values=adv))
            for k in knn_ks:
                pred = knn_predict(xtr, ytr, xte, k, len(train_classes))
                adv = None if xadv is None else \
                    knn_predict(xtr, ytr, xadv, k, len(train_classes)) == yte
                results.append(Result(name, f"knn{k}", "accuracy", "clip", pred == yte,
                                      robust_values=adv))
            logger.info("%s: %s", name, ", ".join(
                f"{r.classifier} {100 * r.summary.mean:.2f}%" + (
                    f" (attacked {100 * r.robust.mean:.2f}%)" if r.robust else "")
                for r in results if r.encoder == name))
    else:
        classes, ttr, tte = multi_label_targets(train_labels, test_labels)
        scored = tte.sum(0) > 0
        if not scored.any():
            raise EvaluationError("no class has a positive clip in the test split")
        info.update(num_classes=len(classes), scored_classes=int(scored.sum()),
                    classes_without_test_positives=[c for c, s in zip(classes, scored)
                                                    if not s])
        for xtr, xte, xadv, name in zip(train_embeddings, test_embeddings, robust, names):
            scorers = []
            if logreg:
                model = fit_ovr_logreg(xtr, ttr, C=logreg_c)
                scorers.append(("logreg", model.decision_function))
            for k in knn_ks:
                scorers.append((f"knn{k}", lambda x, k=k: knn_scores(xtr, ttr, x, k)))
            for label, score in scorers:
                _, per_class = mean_average_precision(tte, score(xte))
                adv = None
                if xadv is not None:
                    adv = mean_average_precision(tte, score(xadv))[1][scored]
                results.append(Result(name, label, "mAP", "class", per_class[scored],
                                      robust_values=adv))
            logger.info("%s: %s", name, ", ".join(
                f"{r.classifier} {100 * r.summary.mean:.2f} mAP" for r in results
                if r.encoder == name))
    return results, info


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m uamix_fairseq.evaluation.probe",
        description="Linear probe (logistic regression; one-vs-rest with mAP for "
        "multi-label data) and k-NN on frozen pooled embeddings of AudioMAE encoders, "
        "with 95% intervals and paired differences against the first encoder.")
    add_encoder_args(p)
    g = p.add_argument_group("data and classifiers")
    g.add_argument("--train-manifest", required=True, help="manifest the classifiers "
                   "are fitted on")
    g.add_argument("--test-manifest", required=True, help="manifest they are scored on")
    g.add_argument("--train-labels", default=None, help="label file of the train "
                   "manifest (default: its path with .label)")
    g.add_argument("--test-labels", default=None, help="label file of the test "
                   "manifest (default: its path with .label)")
    g.add_argument("--knn", type=int, nargs="*", default=[1, 5, 20], metavar="K",
                   help="neighbour counts for cosine k-NN; give --knn alone for none "
                   "(default: 1 5 20)")
    g.add_argument("--no-logreg", action="store_true", help="k-NN only")
    add_attack_args(p, "test clips (each once per crafting encoder; PGD increases the "
                    "cross entropy of the fitted logistic regression, or with --no-logreg "
                    "that of cosine class means of the train clips)")
    return p


def _robust_test_embeddings(args, cfgs, train_emb, train_labels, test_labels, attack,
                            source_cfg=None):
    """Attacked test embeddings per encoder (see ``robust`` for the surrogates)."""
    from ..tools.embed import cached_embeddings
    from .robust import ClassMeanLoss, LogRegLoss, _entry_key, attack_files

    clean = {_entry_key(p, c): e for p, c, e in zip(args.encoder, cfgs, train_emb)}
    multi = is_multi_label(train_labels, test_labels)

    def surrogate(path, cfg):
        xtr = clean.get(_entry_key(path, cfg))
        if xtr is None:  # the transfer source: its own train embeddings and classifier
            xtr = cached_embeddings(path, args.train_manifest, cfg, cache_dir=args.cache_dir,
                                    device=args.device, progress=not args.no_progress)
        if multi:
            _, ttr, tte = multi_label_targets(train_labels, test_labels)
            model = fit_ovr_logreg(xtr, ttr, C=args.logreg_c)
            return LogRegLoss(model, tte, multi_label=True, device=args.device)
        classes, ytr, yte = single_label_indices(train_labels, test_labels)
        if not args.no_logreg:
            model = fit_logreg(xtr, ytr, len(classes), C=args.logreg_c)
            return LogRegLoss(model, yte, device=args.device)
        return ClassMeanLoss(xtr, ytr, len(classes), labels=yte,
                             temperature=attack.temperature, device=args.device)

    return attack_files(args.encoder, args.test_manifest, np.arange(len(test_labels)), cfgs,
                        attack, surrogate, args.device, progress=not args.no_progress,
                        source_cfg=source_cfg)


def _run(args) -> int:
    if any(k < 1 for k in args.knn):
        raise EvaluationError(f"--knn values must be at least 1, got {args.knn}")
    knn = list(dict.fromkeys(args.knn))
    if args.no_logreg and not knn:
        raise EvaluationError("nothing to do: --no-logreg and no --knn values")
    names = encoder_names(args.encoder, args.name, readout_specs(args, args.encoder))
    embed_config(args)  # option errors before any file is read
    attack = attack_config(args)

    from ..labels import label_path_for, read_labels

    train_label_path = args.train_labels or label_path_for(args.train_manifest)
    test_label_path = args.test_labels or label_path_for(args.test_manifest)
    train_labels = read_labels(args.train_manifest, train_label_path)
    test_labels = read_labels(args.test_manifest, test_label_path)
    too_big = [k for k in knn if k > len(train_labels)]
    if too_big:
        raise EvaluationError(f"--knn {too_big} exceed the {len(train_labels)} clips of "
                              f"{args.train_manifest}")
    if attack and attack.eps_db is not None and args.no_logreg and \
            is_multi_label(train_labels, test_labels):
        raise EvaluationError("PGD on multi-label data attacks the one-vs-rest logistic "
                              "regression: drop --no-logreg, or use --attack-snr-db only")
    cfgs = encoder_configs(args, args.encoder)
    baselines = baseline_entries(args, cfgs)
    reference = check_row_names(names, baselines, args.reference)
    source_cfg = None
    if attack and attack.source:
        from ..tools.embed import load_encoder

        source_cfg = embed_config(args, cfgs[0].num_frames)
        load_encoder(attack.source, source_cfg)
    train_emb = embed_all(args.encoder, names, args.train_manifest, cfgs, args,
                          len(train_labels))
    test_emb = embed_all(args.encoder, names, args.test_manifest, cfgs, args,
                         len(test_labels))
    train_emb += embed_baselines(baselines, args.train_manifest, args, len(train_labels))
    test_emb += embed_baselines(baselines, args.test_manifest, args, len(test_labels))
    rows = names + [b[1] for b in baselines]
    robust = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            if attack:
                robust = _robust_test_embeddings(args, cfgs, train_emb, train_labels,
                                                 test_labels, attack, source_cfg)
                robust = robust + [None] * len(baselines)  # baselines: clean only
            results, info = run_probe(train_emb, test_emb, rows, train_labels,
                                      test_labels, knn, args.logreg_c,
                                      logreg=not args.no_logreg,
                                      robust_test_embeddings=robust)
        finally:
            print_warnings(caught)
    settings = {
        "command": "probe",
        "train_manifest": os.path.abspath(args.train_manifest),
        "test_manifest": os.path.abspath(args.test_manifest),
        "train_labels": os.path.abspath(train_label_path),
        "test_labels": os.path.abspath(test_label_path),
        **info, "knn": knn, "logreg": not args.no_logreg, "logreg_c": args.logreg_c,
        "embedding": asdict(cfgs[0]),
        "embeddings": {n: asdict(c) for n, c in zip(names, cfgs)},
        "baselines": {name: key for key, name, _ in baselines},
        "reference": reference,
        "attack": attack.settings(len(test_labels)) if attack else None,
    }
    metric = "mAP" if info["multi_label"] else "accuracy"
    title = (f"linear probe / k-NN {metric}: train {os.path.basename(args.train_manifest)} "
             f"({len(train_labels)} clips), test {os.path.basename(args.test_manifest)} "
             f"({len(test_labels)} clips)")
    # Padding diagnostic over the clips of both manifests (once if they are the same).
    from .diagnostics import manifest_durations

    same = os.path.realpath(args.train_manifest) == os.path.realpath(args.test_manifest)
    durations = manifest_durations(args.train_manifest, cfgs[0].sample_rate)
    matrices = train_emb
    where = f"{len(train_labels)} clips of {os.path.basename(args.train_manifest)}"
    if not same:
        durations = np.concatenate([durations, manifest_durations(args.test_manifest,
                                                                  cfgs[0].sample_rate)])
        matrices = [np.concatenate([a, b]) for a, b in zip(train_emb, test_emb)]
        where = (f"{len(train_labels) + len(test_labels)} clips of "
                 f"{os.path.basename(args.train_manifest)} and "
                 f"{os.path.basename(args.test_manifest)}")
    diagnostics = diagnose(rows, matrices, durations)
    entries = entries_for_report(names, args.encoder, cfgs, baselines)
    return write_report(results, rows, entries, args, "probe", settings, title,
                        attack, "test clips", plot=False, diagnostics=diagnostics,
                        diagnostics_where=where, reference=reference)


def main(argv: Optional[Sequence[str]] = None) -> int:
    return cli_main(_run, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
