"""Frozen-encoder evaluation: few-shot episodes, linear probe and k-NN.

Plain modules (numpy, torch, scikit-learn only for checks; no fairseq):

    episodes     seeded N-way k-shot episode index lists over single-label data
    classifiers  nearest class mean (cosine), logistic regression, k-NN, one-vs-rest
                 logistic regression and average precision
    stats        mean and 95% interval over episodes, paired differences
    report       screen table, JSON, CSV and the accuracy-vs-k plot
    baselines    no-learning baselines scored like encoders (fbank_stats)
    diagnostics  padding diagnostic: PC1 variance share and |r(PC1, clip duration)|

Command lines (they embed clips through ``uamix_fairseq.tools.embed``)::

    python -m uamix_fairseq.evaluation.fewshot --encoder A.pth --manifest test.tsv ...
    python -m uamix_fairseq.evaluation.probe --encoder A.pth --train-manifest ... \
        --test-manifest ...
"""


class EvaluationError(ValueError):
    """Evaluation inputs that cannot be used (the message says what to change)."""
