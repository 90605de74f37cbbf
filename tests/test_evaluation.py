"""Few-shot episodes, classifiers, intervals, reports and the evaluation command lines.

Classifier tests use hand-made embeddings whose geometry fixes the expected accuracy;
logistic regression and average precision are checked against scikit-learn; the
command lines run end to end on the generated demo corpus with a tiny random encoder.
"""

import csv
import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

from uamix_fairseq.evaluation import EvaluationError
from uamix_fairseq.evaluation.classifiers import (
    average_precision, fit_logreg, fit_ovr_logreg, knn_neighbours, knn_predict, knn_scores,
    logreg_predict, mean_average_precision, multi_hot, ncm_predict)
from uamix_fairseq.evaluation.episodes import (
    EpisodeError, SmallClassWarning, sample_episodes, single_label_targets)
from uamix_fairseq.evaluation.fewshot import class_accuracy, plan_episodes, run_fewshot
from uamix_fairseq.evaluation.report import (
    CSV_FIELDS, Result, add_paired_differences, class_rows, format_class_table,
    format_table, plot_fewshot, write_csv, write_json)
from uamix_fairseq.evaluation.stats import mean_ci, paired_difference

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def unit(deg):
    r = np.deg2rad(deg)
    return np.array([np.cos(r), np.sin(r)])


# ---------------------------------------------------------------------------
# episodes
# ---------------------------------------------------------------------------


def _targets(counts):
    return np.concatenate([np.full(n, c) for c, n in enumerate(counts)])


def test_episode_invariants():
    y = _targets([10, 9, 12, 10, 11, 9])
    eps = sample_episodes(y, ways=4, shots=3, queries=5, episodes=40, seed=7)
    assert len(eps) == 40
    for e in eps:
        assert len(set(e.classes.tolist())) == 4
        assert e.support.shape == (12,) and e.query.shape == (20,)
        assert not set(e.support.tolist()) & set(e.query.tolist())
        assert len(set(e.support.tolist())) == 12 and len(set(e.query.tolist())) == 20
        # every clip belongs to the class its episode label stands for
        np.testing.assert_array_equal(y[e.support], e.classes[e.support_labels])
        np.testing.assert_array_equal(y[e.query], e.classes[e.query_labels])
        np.testing.assert_array_equal(np.bincount(e.support_labels), [3] * 4)
        np.testing.assert_array_equal(np.bincount(e.query_labels), [5] * 4)


def test_episodes_are_seeded_and_independent_of_other_settings():
    y = _targets([8] * 6)
    a = sample_episodes(y, 3, 2, 4, 30, seed=0)
    b = sample_episodes(y, 3, 2, 4, 30, seed=0)
    c = sample_episodes(y, 3, 2, 4, 30, seed=1)
    for x, z in zip(a, b):
        np.testing.assert_array_equal(x.support, z.support)
        np.testing.assert_array_equal(x.query, z.query)
    assert any(not np.array_equal(x.support, z.support) for x, z in zip(a, c))
    # The 2-shot episodes do not depend on which other shots are requested.
    one = plan_episodes(y, None, [3], [2], 4, 30, 0)
    many = plan_episodes(y, None, [3, 5], [1, 2, 3], 4, 30, 0)
    for x, z in zip(one[(3, 2)], many[(3, 2)]):
        np.testing.assert_array_equal(x.query, z.query)


def test_small_classes_are_skipped_with_a_warning_naming_them():
    names = ["dog", "cat", "bird", "frog"]
    y = _targets([6, 3, 6, 2])
    with pytest.warns(SmallClassWarning, match=r"cat \(3\), frog \(2\)"):
        eps = sample_episodes(y, 2, 2, 2, 50, seed=0, class_names=names)
    used = {int(c) for e in eps for c in e.classes}
    assert used == {0, 2}


def test_too_few_classes_is_an_error():
    y = _targets([6, 3, 6])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SmallClassWarning)
        with pytest.raises(EpisodeError, match="only 2 of 3 classes"):
            sample_episodes(y, 3, 2, 2, 5, seed=0)
    with pytest.raises(EpisodeError, match="ways must be"):
        sample_episodes(y, 1, 2, 2, 5)


def test_multi_label_clips_are_refused_for_episodes():
    names, y = single_label_targets([["a"], ["b"], ["a"]])
    assert names == ["a", "b"] and y.tolist() == [0, 1, 0]
    with pytest.raises(EpisodeError, match="clip line 2 has b,c"):
        single_label_targets([["a"], ["b", "c"]], source="x.label")


# ---------------------------------------------------------------------------
# classifiers: known geometry
# ---------------------------------------------------------------------------


def _orthogonal_clusters(num_classes=8, per_class=12, seed=0):
    """Class c = e_c times 1.8..2.2 plus noise of std 0.05 on every axis: every clip's
    cosine with its own axis is > 0.9 and with any other < 0.2. Every axis belongs to a
    class, so z-scoring with the statistics of all clips keeps the noise small (a
    pure-noise axis would be blown up to unit variance, as loud as the class axes).
    Lengths vary little: a 1-shot linear model is not scale invariant (a class whose
    single support clip is short can win the queries of a long one), cosine is."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(num_classes), per_class)
    x = 0.05 * rng.standard_normal((len(y), num_classes))
    x[np.arange(len(y)), y] = rng.uniform(1.8, 2.2, len(y))
    return x.astype(np.float32), y


def test_separated_clusters_give_100_percent_through_the_pipeline():
    x, y = _orthogonal_clusters()
    # 3-way 1-shot fits logistic regression in the support's span (3 < 8 dimensions),
    # 5-way 3-shot in all 8 dimensions: both solver paths.
    plan = plan_episodes(y, None, [3, 5], [1, 3], queries=5, episodes=20, seed=0)
    results = run_fewshot([x, x.copy()], ["a", "b"], plan,
                          classifiers=["ncm", "logreg", "knn"], knn_ks=[1, 3])
    assert len(results) == 2 * 2 * 2 * 4
    for r in results:
        assert r.values.shape == (20,)
        assert r.summary.mean == 1.0 and r.summary.ci == 0.0
    add_paired_differences(results, ["a", "b"])
    assert all(r.diff.mean == 0.0 and r.diff.ci == 0.0 for r in results if r.encoder == "b")
    # Per-episode (support) statistics run too; an unknown mode is refused.
    support = run_fewshot([x], ["a"], plan, classifiers=["logreg"], standardize="support")
    assert all(0 <= r.summary.mean <= 1 for r in support)
    with pytest.raises(EvaluationError, match="standardize"):
        run_fewshot([x], ["a"], plan, classifiers=["logreg"], standardize="none")


def test_class_accuracy_by_hand():
    # Two 2-way episodes over 4 classes: episode 0 draws classes (3, 1), episode 1 (1, 0).
    classes = np.array([[3, 1], [1, 0]])
    query_labels = np.array([[0, 0, 1], [0, 1, 1]])
    pred = np.array([[0, 1, 1], [0, 0, 1]])
    correct, scored = class_accuracy(pred, query_labels, classes, num_classes=4)
    # class 3: episode 0's first two queries, one right; class 1: episode 0's third
    # (right) and episode 1's first (right); class 0: episode 1's last two, one right.
    np.testing.assert_array_equal(correct, [1, 2, 0, 1])
    np.testing.assert_array_equal(scored, [2, 2, 0, 2])


def test_per_class_accuracy_pools_the_episodes_and_finds_the_confused_classes():
    x, y = _orthogonal_clusters(num_classes=6)
    # Encoder "b": class 0's clips sit on class 1's axis, so the two are confused
    # whenever an episode draws both; every other class stays perfect.
    xb = x.copy()
    xb[y == 0, 1], xb[y == 0, 0] = xb[y == 0, 0], 0.0
    plan = plan_episodes(y, None, [3], [2], queries=4, episodes=40, seed=0)
    results = run_fewshot([x, xb], ["a", "b"], plan, classifiers=["ncm"])
    for r in results:  # equal queries per class and episode: pooled = episode mean
        correct, scored = r.class_counts
        assert scored.sum() == 40 * 3 * 4
        assert correct.sum() / scored.sum() == pytest.approx(r.summary.mean)
    add_paired_differences(results, ["a", "b"])
    rows = class_rows(results, ["a", "b"], [f"c{i}" for i in range(6)])
    a = {r["class"]: r for r in rows if r["encoder"] == "a"}
    b = {r["class"]: r for r in rows if r["encoder"] == "b"}
    assert all(r["accuracy"] == 1.0 and r["diff"] is None for r in a.values())
    assert b["c0"]["diff"] < 0 and b["c1"]["diff"] < 0
    assert all(b[c]["diff"] == 0.0 for c in ("c2", "c3", "c4", "c5"))
    both = sum(set(e.classes) >= {0, 1} for e in plan[3, 2])
    # Confused only when drawn together: at most the queries of those episodes are lost.
    lost = (1 - b["c0"]["accuracy"]) * b["c0"]["queries"]
    assert 0 < lost <= 4 * both
    text = format_class_table(rows, ["a", "b"])
    assert text.splitlines()[0] == "ncm, 3-way 2-shot, per class:"
    c0 = next(line.split() for line in text.splitlines() if line.startswith("c0 "))
    assert c0 == ["c0", str(a["c0"]["queries"]), "100.0", f"{100 * b['c0']['diff']:+.1f}"]


def test_ncm_gets_exactly_half_right():
    # Class 0's support is two orthogonal unit directions (0 and 90 degrees) of very
    # different lengths: the mean of the *normalised* support points at 45 degrees
    # (the raw mean would point at 14). Class 1's support is at 180 degrees. The
    # decision boundary is the bisector at 112.5 (and 292.5) degrees.
    support = np.stack([2.0 * unit(0), 0.5 * unit(90), 3.0 * unit(180)])
    support_labels = np.array([0, 0, 1])
    # Query lengths vary: cosine ignores them. Per class two queries on each side.
    angles = [50, 100, 120, 150,   # class 0: 50, 100 correct; 120, 150 nearer 180
              200, 250, 20, 340]   # class 1: 200, 250 correct; 20, 340 nearer 45
    query = np.stack([(1 + i) * unit(a) for i, a in enumerate(angles)])
    query_labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    pred = ncm_predict(support, support_labels, query)
    np.testing.assert_array_equal(pred, [0, 0, 1, 1, 1, 1, 0, 0])
    assert (pred == query_labels).mean() == 0.5
    # batched form: the same episode twice gives the same answer twice
    pred2 = ncm_predict(np.stack([support] * 2), np.stack([support_labels] * 2),
                        np.stack([query] * 2))
    np.testing.assert_array_equal(pred2, np.stack([pred, pred]))


def test_knn_vote_and_deterministic_ties():
    support = np.stack([unit(0), unit(10), unit(20), unit(30), unit(30)])
    labels = np.array([1, 0, 0, 1, 2])
    q = np.stack([unit(1)])
    # 1-NN: the support at 0 degrees
    assert knn_predict(support, labels, q, k=1).tolist() == [1]
    # 3-NN: neighbours 0, 10, 20 degrees -> votes 1, 0, 0 -> class 0 by majority
    assert knn_predict(support, labels, q, k=3).tolist() == [0]
    # 2-NN: one vote each -> the class of the nearer neighbour (class 1)
    assert knn_predict(support, labels, q, k=2).tolist() == [1]
    # Two identical supports (indices 3 and 4) at 30 degrees with different labels:
    # a query at 40 degrees takes the lower index, label 1.
    assert knn_predict(support, labels, np.stack([unit(40)]), k=1).tolist() == [1]
    # k larger than the support set is capped: 5 votes, 2x class 0, 2x class 1 ->
    # class 1 (the best-ranked tied class from 35 degrees is index 3, label 1)
    assert knn_predict(support, labels, np.stack([unit(35)]), k=9).tolist() == [1]


def test_knn_neighbours_match_a_brute_force_ranking_with_ties():
    rng = np.random.default_rng(3)
    train = rng.integers(-2, 3, size=(60, 3)).astype(float)  # many exact duplicates
    train[train.sum(1) == 0] = 1.0
    query = rng.standard_normal((25, 3))
    sims = (query / np.linalg.norm(query, axis=1, keepdims=True)) @ \
        (train / np.linalg.norm(train, axis=1, keepdims=True)).T
    for k in (1, 4, 17):
        expected = np.stack([np.lexsort((np.arange(60), -np.round(s, 12)))[:k]
                             for s in sims])
        got = knn_neighbours(train, query, k, chunk=7)
        np.testing.assert_array_equal(got, expected)


def test_knn_vote_matches_a_plain_python_vote():
    from uamix_fairseq.evaluation.classifiers import _vote

    rng = np.random.default_rng(5)
    labels = rng.integers(0, 4, size=(300, 6))
    expected = []
    for row in labels.tolist():
        counts = {c: row.count(c) for c in row}
        best = max(counts.values())
        expected.append(next(c for c in row if counts[c] == best))  # first-ranked tied
    np.testing.assert_array_equal(_vote(labels, 4, chunk=64), expected)


def test_knn_scores_are_label_fractions():
    train = np.stack([unit(0), unit(10), unit(90)])
    targets = np.array([[1, 0], [1, 1], [0, 1]])
    np.testing.assert_allclose(knn_scores(train, targets, np.stack([unit(2)]), k=2),
                               [[1.0, 0.5]])


# ---------------------------------------------------------------------------
# logistic regression against scikit-learn
# ---------------------------------------------------------------------------


def _sk_logreg(x, y, C):
    from sklearn.linear_model import LogisticRegression

    mean, std = x.mean(0), x.std(0)
    return LogisticRegression(C=C, tol=1e-10, max_iter=10000).fit((x - mean) / std, y), \
        mean, std


@pytest.mark.parametrize("n_per_class,dim", [(3, 40), (30, 6)])  # n < D and n > D
def test_logreg_matches_sklearn(n_per_class, dim):
    rng = np.random.default_rng(0)
    E, K, C = 3, 4, 0.5
    y = np.tile(np.repeat(np.arange(K), n_per_class), (E, 1))
    centres = 0.8 * rng.standard_normal((E, K, dim)).repeat(n_per_class, 1)
    x = rng.standard_normal((E, K * n_per_class, dim)) + centres
    q = rng.standard_normal((E, 20, dim))
    model = fit_logreg(x, y, K, C=C)
    pred = logreg_predict(x, y, q, K, C=C)
    for e in range(E):
        sk, mean, std = _sk_logreg(x[e], y[e], C)
        np.testing.assert_allclose(model.weight[e], sk.coef_.T, atol=2e-5)
        np.testing.assert_allclose(model.decision_function(q)[e] - model.bias[e],
                                   sk.decision_function((q[e] - mean) / std)
                                   - sk.intercept_, atol=2e-4)
        np.testing.assert_array_equal(pred[e], sk.predict((q[e] - mean) / std))


def test_ovr_logreg_matches_sklearn_and_handles_constant_classes():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(1)
    x = rng.standard_normal((50, 5))
    t = (x[:, :3] + 0.5 * rng.standard_normal((50, 3)) > 0).astype(float)
    t = np.concatenate([t, np.zeros((50, 1))], axis=1)  # class 3: no positive
    model = fit_ovr_logreg(x, t, C=2.0)
    scores = model.decision_function(x)
    mean, std = x.mean(0), x.std(0)
    for c in range(3):
        sk = LogisticRegression(C=2.0, tol=1e-10, max_iter=10000)
        sk.fit((x - mean) / std, t[:, c])
        np.testing.assert_allclose(scores[:, c], sk.decision_function((x - mean) / std),
                                   atol=1e-4)
    assert np.all(scores[:, 3] == scores[0, 3])


def test_logreg_separates_clusters():
    x, y = _orthogonal_clusters(num_classes=3, per_class=6)
    model = fit_logreg(x, y, 3)  # statistics of the training rows themselves
    assert (model.predict(x) == y).all()


# ---------------------------------------------------------------------------
# average precision
# ---------------------------------------------------------------------------


def test_average_precision_by_hand_and_against_sklearn():
    from sklearn.metrics import average_precision_score

    # ranks: +, -, +, -  ->  AP = 1/2 * 1 + 1/2 * 2/3
    assert average_precision([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.1]) == pytest.approx(5 / 6)
    assert np.isnan(average_precision([0, 0], [0.3, 0.2]))
    rng = np.random.default_rng(0)
    for trial in range(30):
        n = int(rng.integers(2, 60))
        y = rng.random(n) < rng.uniform(0.05, 0.7)
        if not y.any():
            y[0] = True
        s = np.round(rng.standard_normal(n), 1 if trial % 2 else 6)  # many ties, or few
        assert average_precision(y, s) == pytest.approx(average_precision_score(y, s),
                                                        abs=1e-12)


def test_mean_average_precision_skips_classes_without_positives():
    t = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0]])
    s = np.array([[0.9, 0.1, 0.3], [0.2, 0.8, 0.2], [0.1, 0.7, 0.1]])
    m, per = mean_average_precision(t, s)
    assert np.isnan(per[2])
    assert per[0] == pytest.approx(1 / 2 * 1 + 1 / 2 * 2 / 3)
    assert per[1] == pytest.approx(1.0)
    assert m == pytest.approx((per[0] + per[1]) / 2)
    np.testing.assert_array_equal(multi_hot([["b"], ["a", "c"]], ["a", "b", "c"]),
                                  [[0, 1, 0], [1, 0, 1]])


# ---------------------------------------------------------------------------
# intervals
# ---------------------------------------------------------------------------


def test_mean_ci_is_student_t():
    s = mean_ci([0.5, 0.7, 0.9, 0.6, 0.8])
    # mean 0.7, sample std sqrt(0.025), t(0.975, 4 dof) = 2.7764451
    assert s.mean == pytest.approx(0.7)
    assert s.std == pytest.approx(np.sqrt(0.025))
    assert s.ci == pytest.approx(2.7764451052 * np.sqrt(0.025) / np.sqrt(5), rel=1e-9)
    # 300 zeros and 300 ones: std = sqrt(600 / 599) / 2, t(0.975, 599) = 1.9639322
    big = mean_ci(np.r_[np.zeros(300), np.ones(300)])
    assert big.ci == pytest.approx(1.9639322489 * np.sqrt(600 / 599) / 2 / np.sqrt(600),
                                   rel=1e-9)
    one = mean_ci([0.4])
    assert one.mean == 0.4 and np.isnan(one.ci)
    with pytest.raises(ValueError):
        mean_ci([])


def test_paired_difference():
    d = paired_difference([0.5, 0.6, 0.7], [0.6, 0.8, 0.7])
    # differences 0.1, 0.2, 0.0: mean 0.1, std 0.1, t(0.975, 2 dof) = 4.3026527
    assert d.mean == pytest.approx(0.1)
    assert d.ci == pytest.approx(4.3026527297 * 0.1 / np.sqrt(3), rel=1e-9)
    same = paired_difference([0.3, 0.9, 0.5], [0.3, 0.9, 0.5])
    assert same.mean == 0.0 and same.ci == 0.0
    with pytest.raises(ValueError, match="not paired"):
        paired_difference([1, 2], [1, 2, 3])


# ---------------------------------------------------------------------------
# report files
# ---------------------------------------------------------------------------


def _hand_results():
    out = []
    for k, (a, b) in {1: ([0.5, 0.7, 0.9, 0.6, 0.8], [0.6, 0.7, 1.0, 0.6, 0.9]),
                      5: ([0.8, 0.9, 1.0, 0.9, 0.9], [0.8, 0.9, 1.0, 0.9, 0.9])}.items():
        out.append(Result("before", "ncm", "accuracy", "episode", a, ways=5, shots=k))
        out.append(Result("after", "ncm", "accuracy", "episode", b, ways=5, shots=k))
    return out


def test_report_table_json_csv_png(tmp_path):
    results = _hand_results()
    order = ["before", "after"]
    add_paired_differences(results, order)
    table = format_table(results, order, title="demo")
    assert "mean ± 95% CI (%)" in table and "Δ vs before (%)" in table
    assert "70.00 ± 19.63" in table          # the hand-computed interval above
    assert "+6.00 ± 6.80" in table           # diffs 0.1, 0, 0.1, 0, 0.1
    assert "+0.00 ± 0.00" in table
    write_json(tmp_path / "r.json", results, order, {"seed": 0}, [{"name": "before"}])
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["settings"] == {"seed": 0}
    first = data["results"][0]
    assert (first["encoder"], first["shots"], first["diff_vs"]) == ("before", 1, None)
    assert first["values"] == [0.5, 0.7, 0.9, 0.6, 0.8]
    assert first["ci95"] == pytest.approx(2.7764451052 * np.sqrt(0.025) / np.sqrt(5))
    after = data["results"][1]
    assert after["diff_vs"] == "before" and after["diff_mean"] == pytest.approx(0.06)
    write_csv(tmp_path / "r.csv", results, order)
    with open(tmp_path / "r.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == CSV_FIELDS and len(rows) == 4
    assert float(rows[0]["mean"]) == pytest.approx(0.7) and rows[0]["diff_mean"] == ""
    assert float(rows[3]["diff_mean"]) == 0.0
    plot_fewshot(tmp_path / "r.png", results, order)
    assert (tmp_path / "r.png").read_bytes()[:8] == PNG_MAGIC


def test_plot_title_stays_inside_the_figure(tmp_path, monkeypatch):
    """Issue 11.13: a long title of a one-column plot is wrapped, not cut at the edges."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    seen = {}
    real_savefig = Figure.savefig
    monkeypatch.setattr(Figure, "savefig",
                        lambda self, *a, **kw: seen.setdefault("fig", self) and
                        real_savefig(self, *a, **kw))
    results = _hand_results()
    title = ("few-shot accuracy on heldout.tsv (300 episodes, 10 queries/class, seed 0)\n"
             "attack on the queries: a second line that is also far too long for one column")
    plot_fewshot(tmp_path / "r.png", results, ["before", "after"], title=title)
    fig = seen["fig"]
    box = fig._suptitle.get_window_extent(FigureCanvasAgg(fig).get_renderer())
    assert 0 <= box.x0 and box.x1 <= fig.bbox.width, (box, fig.bbox)
    assert fig._suptitle.get_text().count("\n") >= 3  # both lines wrapped


# ---------------------------------------------------------------------------
# command lines, end to end on generated audio
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    import demo_data
    from uamix_fairseq.modules.audiomae import EncoderConfig, write_random_audiomae

    root = tmp_path_factory.mktemp("evaluation")
    corpus = root / "corpus"
    # train.tsv only: one clip per held-out source is the least the corpus writes.
    assert demo_data.main([str(corpus), "--clips-per-class", "8", "--heldout-clips-per-class", "1",
                           "--seconds", "0.5"]) == 0
    cfg = EncoderConfig(embed_dim=64, depth=2, num_heads=1, num_frames=32)
    write_random_audiomae(root / "tiny.pth", cfg)
    write_random_audiomae(root / "other.pth", cfg, seed=1)
    return root


def _common(demo, out, cache="cache"):
    return ["--num-frames", "32", "--cache-dir", str(demo / cache), "--out", str(out),
            "--no-progress"]


def test_fewshot_cli_end_to_end(demo):
    out = demo / "fewshot"
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, "-m", "uamix_fairseq.evaluation.fewshot",
           "--encoder", str(demo / "tiny.pth"), "--encoder", str(demo / "tiny.pth"),
           "--name", "before", "--name", "after",
           "--manifest", str(demo / "corpus" / "train.tsv"), "--ways", "3", "--ways", "5",
           "--shots", "1", "2", "--queries", "4", "--episodes", "30", "--seed", "0",
           "--classifier", "ncm", "logreg", "knn", "--knn", "1", "3", "--per-class"] + \
        _common(demo, out, cache="cache_e2e")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("few-shot accuracy on train.tsv")
    assert sum(" after " in line and line.rstrip().endswith("+0.00 ± 0.00")
               for line in lines) == 4 * 2 * 2
    data = json.loads((out / "fewshot.json").read_text())
    assert len(data["results"]) == 2 * 4 * 2 * 2
    for r in data["results"]:
        assert r["n"] == 30 and len(r["values"]) == 30 and 0 <= r["mean"] <= 1
        if r["encoder"] == "after":
            assert r["diff_mean"] == 0.0 and r["diff_ci95"] == 0.0
    # identical 1-shot decisions: with one support per class NCM is 1-NN
    by = {(r["classifier"], r["ways"], r["shots"], r["encoder"]): r["values"]
          for r in data["results"]}
    assert by[("ncm", 5, 1, "before")] == by[("knn1", 5, 1, "before")]
    with open(out / "fewshot.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 32
    assert (out / "fewshot.png").read_bytes()[:8] == PNG_MAGIC
    assert len(os.listdir(demo / "cache_e2e")) == 1  # the file was embedded once
    # Per class: the same encoder twice, so every difference is zero; printed too.
    with open(out / "fewshot_classes.csv", newline="") as f:
        per_class = list(csv.DictReader(f))
    settings = {(r["classifier"], r["ways"], r["shots"]) for r in per_class}
    assert len(settings) == 16
    assert all(float(r["diff"]) == 0.0 for r in per_class if r["encoder"] == "after")
    assert sum(int(r["queries"]) for r in per_class
               if (r["encoder"], r["classifier"], r["ways"], r["shots"]) ==
               ("before", "ncm", "5", "1")) == 30 * 5 * 4
    assert "ncm, 5-way 1-shot, per class:" in proc.stdout


def test_per_class_file_names_the_classes_and_takes_the_reference_row(demo):
    from uamix_fairseq.evaluation import fewshot
    from uamix_fairseq.labels import read_labels

    out = demo / "fewshot_classes"
    manifest = demo / "corpus" / "train.tsv"
    assert fewshot.main(["--encoder", str(demo / "tiny.pth"), "--encoder", str(demo / "other.pth"),
                         "--name", "a", "--name", "b", "--manifest", str(manifest),
                         "--ways", "3", "--shots", "1", "--queries", "4", "--episodes", "40",
                         "--classifier", "ncm", "--baseline", "fbank_stats",
                         "--reference", "fbank-stats"] + _common(demo, out)) == 0
    with open(out / "fewshot_classes.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["class"] for r in rows} == {row[0] for row in read_labels(str(manifest))}
    acc = {(r["encoder"], r["class"]): float(r["accuracy"]) for r in rows}
    for r in rows:
        if r["encoder"] == "fbank-stats":
            assert r["diff_vs"] == "" and r["diff"] == ""
        else:
            assert r["diff_vs"] == "fbank-stats"
            assert float(r["diff"]) == pytest.approx(acc[r["encoder"], r["class"]] -
                                                     acc["fbank-stats", r["class"]])
    # The classes' pooled counts add up to each row's mean accuracy over the episodes.
    with open(out / "fewshot.csv", newline="") as f:
        means = {r["encoder"]: float(r["mean"]) for r in csv.DictReader(f)}
    for name in ("a", "b", "fbank-stats"):
        mine = [r for r in rows if r["encoder"] == name]
        assert sum(int(r["queries"]) for r in mine) == 40 * 3 * 4
        assert sum(float(r["accuracy"]) * int(r["queries"]) for r in mine) / (40 * 3 * 4) == \
            pytest.approx(means[name])


def test_fewshot_cli_warns_about_small_classes(demo, capsys):
    from uamix_fairseq.evaluation import fewshot

    from uamix_fairseq.labels import read_labels

    labels = [r[0] for r in read_labels(demo / "corpus" / "train.tsv")]
    counts = {c: labels.count(c) for c in set(labels)}
    small = sorted(c for c, n in counts.items() if n < 8)
    assert small, counts
    code = fewshot.main(["--encoder", str(demo / "tiny.pth"), "--encoder",
                         str(demo / "other.pth"), "--manifest",
                         str(demo / "corpus" / "train.tsv"), "--ways", "2", "--shots", "2",
                         "--queries", "6", "--episodes", "10", "--classifier", "ncm"]
                        + _common(demo, demo / "fs_small"))
    err = capsys.readouterr().err
    assert code == 0, err
    assert "warning:" in err and all(f"{c} ({counts[c]})" in err for c in small)


def _fewshot_error(demo, capsys, *extra, manifest=None):
    from uamix_fairseq.evaluation import fewshot

    args = ["--encoder", str(demo / "tiny.pth"),
            "--manifest", str(manifest or demo / "corpus" / "train.tsv"),
            "--shots", "1", "--queries", "2", "--episodes", "5"] + list(extra)
    code = fewshot.main(args + _common(demo, demo / "fs_err"))
    return code, capsys.readouterr().err


def test_cli_errors(demo, capsys, tmp_path):
    corpus = demo / "corpus"
    # labels that do not line up with the manifest
    bad = tmp_path / "short.label"
    bad.write_text("".join(l + "\n" for l in (corpus / "train.label").read_text().split()[:-1]))
    code, err = _fewshot_error(demo, capsys, "--labels", str(bad))
    assert code == 2 and "label lines" in err and "short.label" in err
    # too few classes for N
    code, err = _fewshot_error(demo, capsys, "--ways", "16")
    assert code == 2 and "16-way" in err and "only 15 of 15 classes" in err
    # not an encoder
    junk = tmp_path / "junk.pt"
    torch.save({"model": {"fc.weight": torch.zeros(2, 2)}}, junk)
    from uamix_fairseq.evaluation import fewshot
    code = fewshot.main(["--encoder", str(demo / "tiny.pth"), "--encoder", str(junk),
                         "--manifest", str(corpus / "train.tsv"), "--shots", "1",
                         "--queries", "2", "--episodes", "5"]
                        + _common(demo, demo / "fs_err"))
    err = capsys.readouterr().err
    assert code == 2 and str(junk) in err and "AudioMAE encoder" in err
    # an empty split
    empty = tmp_path / "empty.tsv"
    empty.write_text(str(corpus / "audio") + "\n")
    (tmp_path / "empty.label").write_text("")
    code, err = _fewshot_error(demo, capsys, manifest=empty)
    assert code == 2 and "no clip lines" in err
    # names that do not match the encoders
    code, err = _fewshot_error(demo, capsys, "--name", "a", "--name", "b")
    assert code == 2 and "--name" in err


def test_probe_cli_single_and_multi_label(demo, capsys, tmp_path):
    from uamix_fairseq.evaluation import probe

    corpus = demo / "corpus"
    base = ["--encoder", str(demo / "tiny.pth"), "--encoder", str(demo / "other.pth"),
            "--train-manifest", str(corpus / "train.tsv"),
            "--test-manifest", str(corpus / "valid.tsv"), "--knn", "1", "5"]
    out = tmp_path / "single"
    assert probe.main(base + _common(demo, out)) == 0
    printed = capsys.readouterr().out
    assert "accuracy" in printed and "Δ vs tiny" in printed
    data = json.loads((out / "probe.json").read_text())
    n_test = len((corpus / "valid.label").read_text().split())
    assert not data["settings"]["multi_label"]
    assert [r["classifier"] for r in data["results"]] == ["logreg"] * 2 + ["knn1"] * 2 + \
        ["knn5"] * 2
    for r in data["results"]:
        assert r["unit"] == "clip" and r["n"] == n_test
        assert set(r["values"]) <= {0.0, 1.0}
    assert (out / "probe.csv").exists()

    # multi-label: every other clip also carries "loud"
    for split in ("train", "valid"):
        rows = (corpus / f"{split}.label").read_text().split()
        (tmp_path / f"{split}.label").write_text(
            "".join(r + (",loud" if i % 2 == 0 else "") + "\n" for i, r in enumerate(rows)))
    out = tmp_path / "multi"
    assert probe.main(base + ["--train-labels", str(tmp_path / "train.label"),
                              "--test-labels", str(tmp_path / "valid.label")]
                      + _common(demo, out)) == 0
    assert "mAP" in capsys.readouterr().out
    data = json.loads((out / "probe.json").read_text())
    assert data["settings"]["multi_label"]
    scored = data["settings"]["scored_classes"]
    assert scored >= 2
    for r in data["results"]:
        assert r["metric"] == "mAP" and r["unit"] == "class" and r["n"] == scored
