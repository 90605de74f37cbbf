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
from ._cli import (add_encoder_args, check_encoders, cli_main, embed_all, embed_config,
                   encoder_names, print_warnings)
from .classifiers import (fit_logreg, fit_ovr_logreg, knn_predict, knn_scores,
                          mean_average_precision, multi_hot)
from .report import Result, print_and_write

__all__ = ["main", "run_probe"]

logger = logging.getLogger("uamix_fairseq.evaluation")


def run_probe(train_embeddings: Sequence[np.ndarray], test_embeddings: Sequence[np.ndarray],
              names: Sequence[str], train_labels: Sequence[Sequence[str]],
              test_labels: Sequence[Sequence[str]], knn_ks: Sequence[int] = (1, 5, 20),
              logreg_c: float = 1.0, logreg: bool = True) -> Tuple[List[Result], dict]:
    """Results per encoder and classifier, and facts about the data for the report.

    ``train_embeddings[i]``/``test_embeddings[i]`` are encoder ``names[i]``'s matrices,
    rows in the order of ``train_labels``/``test_labels`` (lists of class names).
    """
    if not train_labels or not test_labels:
        raise EvaluationError("the train and the test split both need clips")
    multi = any(len(r) > 1 for r in list(train_labels) + list(test_labels))
    info = {"multi_label": multi, "num_train": len(train_labels),
            "num_test": len(test_labels)}
    results = []
    if not multi:
        train_classes = sorted({r[0] for r in train_labels})
        if len(train_classes) < 2:
            raise EvaluationError(f"the train split has a single class "
                                  f"({train_classes[0]}); a classifier needs at least 2")
        index = {c: i for i, c in enumerate(train_classes)}
        unseen = sorted({r[0] for r in test_labels} - set(index))
        if unseen:
            unseen_set = set(unseen)
            n_clips = sum(r[0] in unseen_set for r in test_labels)
            warnings.warn(f"{len(unseen)} test class(es) never occur in the train split, "
                          f"so their {n_clips} test clip(s) count as errors: "
                          f"{', '.join(unseen[:10])}{' ...' if len(unseen) > 10 else ''}")
        ytr = np.array([index[r[0]] for r in train_labels])
        yte = np.array([index.get(r[0], -1) for r in test_labels])
        info.update(num_classes=len(train_classes), unseen_test_classes=unseen)
        for xtr, xte, name in zip(train_embeddings, test_embeddings, names):
            if logreg:
                model = fit_logreg(xtr, ytr, len(train_classes), C=logreg_c)
                pred = model.predict(xte)
                results.append(Result(name, "logreg", "accuracy", "clip", pred == yte))
            for k in knn_ks:
                pred = knn_predict(xtr, ytr, xte, k, len(train_classes))
                results.append(Result(name, f"knn{k}", "accuracy", "clip", pred == yte))
            logger.info("%s: %s", name, ", ".join(
                f"{r.classifier} {100 * r.summary.mean:.2f}%" for r in results
                if r.encoder == name))
    else:
        classes = sorted({c for r in list(train_labels) + list(test_labels) for c in r})
        ttr, tte = multi_hot(train_labels, classes), multi_hot(test_labels, classes)
        scored = tte.sum(0) > 0
        if not scored.any():
            raise EvaluationError("no class has a positive clip in the test split")
        info.update(num_classes=len(classes), scored_classes=int(scored.sum()),
                    classes_without_test_positives=[c for c, s in zip(classes, scored)
                                                    if not s])
        for xtr, xte, name in zip(train_embeddings, test_embeddings, names):
            scorers = []
            if logreg:
                model = fit_ovr_logreg(xtr, ttr, C=logreg_c)
                scorers.append(("logreg", model.decision_function(xte)))
            for k in knn_ks:
                scorers.append((f"knn{k}", knn_scores(xtr, ttr, xte, k)))
            for label, scores in scorers:
                _, per_class = mean_average_precision(tte, scores)
                results.append(Result(name, label, "mAP", "class", per_class[scored]))
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
    return p


def _run(args) -> int:
    if any(k < 1 for k in args.knn):
        raise EvaluationError(f"--knn values must be at least 1, got {args.knn}")
    knn = list(dict.fromkeys(args.knn))
    if args.no_logreg and not knn:
        raise EvaluationError("nothing to do: --no-logreg and no --knn values")
    names = encoder_names(args.encoder, args.name)
    cfg = embed_config(args)

    from ..labels import label_path_for, read_labels

    train_label_path = args.train_labels or label_path_for(args.train_manifest)
    test_label_path = args.test_labels or label_path_for(args.test_manifest)
    train_labels = read_labels(args.train_manifest, train_label_path)
    test_labels = read_labels(args.test_manifest, test_label_path)
    too_big = [k for k in knn if k > len(train_labels)]
    if too_big:
        raise EvaluationError(f"--knn {too_big} exceed the {len(train_labels)} clips of "
                              f"{args.train_manifest}")
    check_encoders(args.encoder, cfg)
    train_emb = embed_all(args.encoder, names, args.train_manifest, cfg, args,
                          len(train_labels))
    test_emb = embed_all(args.encoder, names, args.test_manifest, cfg, args,
                         len(test_labels))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            results, info = run_probe(train_emb, test_emb, names, train_labels,
                                      test_labels, knn, args.logreg_c,
                                      logreg=not args.no_logreg)
        finally:
            print_warnings(caught)
    settings = {
        "command": "probe",
        "train_manifest": os.path.abspath(args.train_manifest),
        "test_manifest": os.path.abspath(args.test_manifest),
        "train_labels": os.path.abspath(train_label_path),
        "test_labels": os.path.abspath(test_label_path),
        **info, "knn": knn, "logreg": not args.no_logreg, "logreg_c": args.logreg_c,
        "embedding": asdict(cfg),
    }
    encoders = [{"name": n, "path": os.path.abspath(p)} for n, p in zip(names, args.encoder)]
    metric = "mAP" if info["multi_label"] else "accuracy"
    title = (f"linear probe / k-NN {metric}: train {os.path.basename(args.train_manifest)} "
             f"({len(train_labels)} clips), test {os.path.basename(args.test_manifest)} "
             f"({len(test_labels)} clips)")
    paths = print_and_write(results, names, args.out, "probe", settings, encoders,
                            title=title, plot=False)
    print("wrote " + ", ".join(paths.values()), file=sys.stderr)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return cli_main(_run, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
