"""Robustness options of the few-shot and probe commands (evaluation/robust.py).

A toy set of pure tones (three classes) and two random one-block encoders: small enough
that every attack runs in a fraction of a second, separable enough that a random
encoder is well above chance, so an attack has accuracy to take away.
"""

import csv
import json
import math

import numpy as np
import pytest
import torch

from uamix_fairseq.modules.audiomae import EncoderConfig, write_random_audiomae
from uamix_fairseq.tools.embed import (EmbedConfig, clip_dataset, embed_manifest,
                                 iter_clip_batches, load_encoder)
from uamix_fairseq.evaluation import EvaluationError, fewshot, probe
from uamix_fairseq.evaluation.classifiers import fit_logreg, fit_ovr_logreg, ncm_predict
from uamix_fairseq.evaluation.fewshot import plan_episodes, run_fewshot
from uamix_fairseq.evaluation.report import (
    CSV_FIELDS, ROBUST_CSV_FIELDS, Result, add_paired_differences, format_table,
    write_csv, write_json)
from uamix_fairseq.evaluation.robust import (
    AttackConfig, ClassMeanLoss, LogRegLoss, attacked_embeddings, perturbed_inputs,
    query_clips)
from uamix_fairseq.labels import read_labels, write_labels
from uamix_fairseq.manifest import write_manifest

FREQS = (300, 1200, 4000)
PER_CLASS = 6
CFG = EmbedConfig(num_frames=32, batch_size=4)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    import soundfile as sf

    root = tmp_path_factory.mktemp("robust")
    rng = np.random.default_rng(0)
    (root / "audio").mkdir()
    entries, labels = [], []
    for c, f in enumerate(FREQS):
        for i in range(PER_CLASS):
            n = 6400 + 160 * int(rng.integers(0, 10))  # 0.40-0.49 s, >= 32 frames
            t = np.arange(n) / 16000
            wav = rng.uniform(0.2, 0.5) * np.sin(2 * np.pi * f * rng.uniform(0.9, 1.1) * t)
            wav += 0.01 * rng.standard_normal(n)
            sf.write(root / "audio" / f"c{c}_{i}.wav", wav.astype(np.float32), 16000,
                     subtype="PCM_16")
            entries.append((f"c{c}_{i}.wav", n))
            labels.append([f"tone{f}"])
    write_manifest(root / "toy.tsv", root / "audio", entries)
    write_labels(root / "toy.label", labels)
    enc_cfg = EncoderConfig(embed_dim=32, depth=1, num_heads=1, num_frames=32)
    write_random_audiomae(root / "a.pth", enc_cfg, seed=0)
    write_random_audiomae(root / "b.pth", enc_cfg, seed=1)
    return root


def _targets(root):
    return np.array([FREQS.index(int(r[0][4:])) for r in read_labels(root / "toy.tsv")])


def _batches(root, clips, batch_size=4):
    return iter_clip_batches(clip_dataset(root / "toy.tsv", CFG), clips, batch_size)


def _class_mean_loss(enc, root, temperature=0.1):
    clean = embed_manifest(enc, root / "toy.tsv", CFG, progress=False)
    y = _targets(root)
    return ClassMeanLoss(clean, y, len(FREQS), labels=y, temperature=temperature,
                         self_in_pool=True)


# ---------------------------------------------------------------------------
# configuration and surrogate losses
# ---------------------------------------------------------------------------


def test_attack_config_budget_and_errors():
    a = AttackConfig(eps_db=4.0, steps=8)
    assert a.enabled and a.effective_step_size_db == pytest.approx(2.5 * 4 / 8)
    eps, step = a.budget(0.5)  # 10 dB = ln(10) nats, / (2 * 0.5)
    assert eps == pytest.approx(0.4 * math.log(10)) and step == pytest.approx(eps * 2.5 / 8)
    assert AttackConfig(eps_db=4.0, steps=8, step_size_db=1.0).effective_step_size_db == 1.0
    assert not AttackConfig().enabled and AttackConfig(snr_db=10).enabled
    assert AttackConfig(eps_db=0.0).enabled  # budget 0 is the robust == clean check
    with pytest.raises(EvaluationError, match="--attack-eps-db"):
        AttackConfig(eps_db=-1)
    with pytest.raises(EvaluationError, match="--attack-source .* needs --attack-eps-db"):
        AttackConfig(snr_db=10, source="x.pth")
    with pytest.raises(EvaluationError, match="--attack-steps"):
        AttackConfig(eps_db=1, steps=-2)


def test_class_mean_loss_leaves_the_attacked_clip_out_of_its_class_mean():
    # Pool: class 0 = clips 0 (0 deg) and 1 (90 deg), class 1 = clip 2 (180 deg).
    deg = np.deg2rad([0.0, 90.0, 180.0])
    pool = np.stack([np.cos(deg), np.sin(deg)], 1) * np.array([[2.0], [0.5], [3.0]])
    y = np.array([0, 0, 1])
    loss = ClassMeanLoss(pool, y, 2, labels=y, temperature=0.5, self_in_pool=True)
    e = torch.tensor([[1.0, 1.0]]) / math.sqrt(2)  # embedding of clip 0 at 45 degrees
    # Clip 0 left out: class 0's mean is clip 1 alone (90 deg): cos 45 = 0.7071;
    # class 1 at 180 deg: cos 135 = -0.7071. Logits / 0.5.
    got = loss.logits(e, np.array([0]))
    np.testing.assert_allclose(got.numpy(), [[math.sqrt(0.5) / 0.5, -math.sqrt(0.5) / 0.5]],
                               atol=1e-6)
    ce = math.log1p(math.exp(-2 * math.sqrt(0.5) / 0.5))
    assert float(loss(e, np.array([0]))) == pytest.approx(ce, rel=1e-5)
    # Without leave-one-out class 0's mean points at 45 degrees: cosine 1.
    plain = ClassMeanLoss(pool, y, 2, labels=y, temperature=0.5)
    np.testing.assert_allclose(plain.logits(e, np.array([0])).numpy(),
                               [[2.0, -math.sqrt(2)]], atol=1e-6)


def test_logreg_loss_is_the_fitted_models_cross_entropy():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((30, 5)) + np.repeat(np.eye(3, 5) * 2, 10, 0)
    y = np.repeat(np.arange(3), 10)
    model = fit_logreg(x, y, 3)
    q = rng.standard_normal((4, 5))
    yq = np.array([0, 2, -1, 1])  # -1: a class the train split lacks, ignored
    loss = LogRegLoss(model, yq)
    logits = loss.logits(torch.tensor(q, dtype=torch.float32)).double().numpy()
    np.testing.assert_allclose(logits, model.decision_function(q), atol=1e-4)
    ref = model.decision_function(q)
    ce = sum(np.log(np.exp(ref[i]).sum()) - ref[i, yq[i]] for i in (0, 1, 3))
    assert float(loss(torch.tensor(q, dtype=torch.float32), np.arange(4))) == \
        pytest.approx(ce, rel=1e-4)
    # One-vs-rest: only fitted classes count (class 2 has no positive: constant score).
    t = np.stack([y == 0, y == 1, np.zeros(30, bool)], 1).astype(float)
    ovr = fit_ovr_logreg(x, t)
    tq = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0]], dtype=float)
    s = ovr.decision_function(q)[:, :2]
    bce = np.sum(np.logaddexp(0, s) - tq[:, :2] * s)
    multi = LogRegLoss(ovr, tq, multi_label=True)
    assert float(multi(torch.tensor(q, dtype=torch.float32), np.arange(4))) == \
        pytest.approx(bce, rel=1e-4)


# ---------------------------------------------------------------------------
# perturbations
# ---------------------------------------------------------------------------


def test_pgd_stays_within_the_db_budget_and_raises_the_loss(toy):
    enc = load_encoder(toy / "a.pth", CFG)
    loss = _class_mean_loss(enc, toy)
    frontend = CFG.frontend()
    clips, wav, lengths = next(_batches(toy, [0, 7, 13]))
    clean = perturbed_inputs(clips, wav, lengths, frontend, AttackConfig(snr_db=None))
    attack = AttackConfig(eps_db=2.0, steps=5)
    adv = perturbed_inputs(clips, wav, lengths, frontend, attack, (enc, loss))
    eps, _ = attack.budget(frontend.norm_std)
    delta = (adv - clean).abs()
    # In dB of mel power: normalised units * 2 * std back to nats, * 10 / ln 10.
    delta_db = delta * 2 * frontend.norm_std * 10 / math.log(10)
    assert float(delta.max()) <= eps * (1 + 1e-5) and float(delta_db.max()) <= 2.0 + 1e-4
    assert float(delta.max()) >= 0.99 * eps  # the signed steps reach the budget
    # PGD raises the loss more than a random corner of the same budget does.
    corner = clean + eps * torch.sign(torch.randn(clean.shape, generator=torch.Generator()
                                                  .manual_seed(0)))
    with torch.no_grad():
        adv_loss, clean_loss, corner_loss = (float(loss(enc.embed(v), clips))
                                             for v in (adv, clean, corner))
    assert adv_loss > clean_loss + 0.3 and adv_loss > corner_loss + 0.3
    assert all(p.grad is None for p in enc.parameters())


def test_zero_budget_without_noise_embeds_exactly_the_clean_clips(toy):
    enc = load_encoder(toy / "a.pth", CFG)
    clean = embed_manifest(enc, toy / "toy.tsv", CFG, progress=False)
    clips = [16, 2, 9, 3, 11]  # another order and batching than the clean pass
    (adv,) = attacked_embeddings(_batches(toy, clips, 3), [enc], CFG.frontend(),
                                 AttackConfig(eps_db=0.0, steps=4),
                                 crafter=(enc, _class_mean_loss(enc, toy)))
    assert np.array_equal(adv, clean[clips])


def test_noise_is_per_clip_and_high_snr_changes_nearly_nothing(toy):
    enc = load_encoder(toy / "a.pth", CFG)
    clean = embed_manifest(enc, toy / "toy.tsv", CFG, progress=False)
    clips = list(range(0, 18, 2))
    frontend = CFG.frontend()
    loud, = attacked_embeddings(_batches(toy, clips, 4), [enc], frontend,
                                AttackConfig(snr_db=0.0))
    loud_1, = attacked_embeddings(_batches(toy, clips, 1), [enc], frontend,
                                  AttackConfig(snr_db=0.0))
    np.testing.assert_allclose(loud, loud_1, atol=1e-5)  # seeded per clip, not per batch
    other, = attacked_embeddings(_batches(toy, clips, 4), [enc], frontend,
                                 AttackConfig(snr_db=0.0, seed=1))
    quiet, = attacked_embeddings(_batches(toy, clips, 4), [enc], frontend,
                                 AttackConfig(snr_db=80.0))
    scale = np.abs(clean[clips]).max()
    assert np.abs(loud - clean[clips]).max() > 0.05 * scale
    assert np.abs(other - loud).max() > 0.01 * scale
    change = np.abs(quiet - clean[clips]).max()
    assert 0 < change < 1e-3 * scale


def test_transfer_attack_uses_only_the_source_gradients(toy):
    source = load_encoder(toy / "b.pth", CFG)
    target = load_encoder(toy / "a.pth", CFG)
    seen = []
    target.register_forward_pre_hook(
        lambda mod, inp: seen.append((torch.is_grad_enabled(), inp[0].requires_grad)))
    loss = _class_mean_loss(source, toy)
    attack = AttackConfig(eps_db=3.0, steps=3)
    clips = [1, 8, 15, 4]
    frontend = CFG.frontend()
    transfer, = attacked_embeddings(_batches(toy, clips), [target], frontend, attack,
                                    crafter=(source, loss))
    assert seen and not any(g or r for g, r in seen)  # the target never gave a gradient
    assert all(p.grad is None for p in target.parameters())
    # The same inputs as a white-box attack on the source, embedded by the target.
    batch = next(_batches(toy, clips))
    x = perturbed_inputs(*batch, frontend, attack, (source, loss))
    with torch.no_grad():
        np.testing.assert_allclose(transfer, target.embed(x).numpy(), atol=1e-6)
    white, = attacked_embeddings(_batches(toy, clips), [target], frontend, attack,
                                 crafter=(target, _class_mean_loss(target, toy)))
    assert np.abs(white - transfer).max() > 1e-3


# ---------------------------------------------------------------------------
# few-shot scoring and reports
# ---------------------------------------------------------------------------


def test_robust_scoring_perturbs_queries_only_on_the_same_episodes():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 6)
    emb = rng.standard_normal((24, 8)) + 3 * np.eye(4, 8)[y]
    noisy = emb + 2.0 * rng.standard_normal(emb.shape)  # every row "attacked"
    plan = plan_episodes(y, None, [3], [1, 2], queries=3, episodes=15, seed=0)
    clean_only = run_fewshot([emb], ["a"], plan, classifiers=["ncm", "logreg"])
    both = run_fewshot([emb], ["a"], plan, classifiers=["ncm", "logreg"],
                       robust_embeddings=[noisy])
    for r0, r in zip(clean_only, both):
        assert r0.robust is None and np.array_equal(r0.values, r.values)
    # By hand: clean support, attacked queries, the same episodes.
    for r in both:
        if r.classifier != "ncm":
            continue
        expected = [np.mean(ncm_predict(emb[e.support], e.support_labels, noisy[e.query], 3)
                            == e.query_labels) for e in plan[(r.ways, r.shots)]]
        np.testing.assert_array_equal(r.robust_values, expected)
    same = run_fewshot([emb], ["a"], plan, classifiers=["ncm"], robust_embeddings=[emb])
    assert all(np.array_equal(r.values, r.robust_values) for r in same)
    assert set(query_clips(plan).tolist()) == {int(c) for eps in plan.values()
                                               for e in eps for c in e.query}


def test_report_shows_clean_and_robust_side_by_side(tmp_path):
    a = Result("before", "ncm", "accuracy", "episode", [0.5, 0.7, 0.9, 0.6, 0.8],
               ways=5, shots=1, robust_values=[0.4, 0.5, 0.9, 0.6, 0.6])
    b = Result("after", "ncm", "accuracy", "episode", [0.6, 0.7, 1.0, 0.6, 0.9],
               ways=5, shots=1, robust_values=[0.6, 0.7, 0.9, 0.6, 0.8])
    add_paired_differences([a, b], ["before", "after"])
    assert a.robust.mean == pytest.approx(0.6) and a.robust_drop.mean == pytest.approx(-0.1)
    # robust after - before: 0.2, 0.2, 0, 0, 0.2 -> mean 0.12
    assert b.robust_diff.mean == pytest.approx(0.12)
    t = 2.7764451052  # t(0.975, 4 dof)
    assert b.robust_diff.ci == pytest.approx(t * np.std([.2, .2, 0, 0, .2], ddof=1) / 5 ** .5)
    table = format_table([a, b], ["before", "after"])
    assert "robust ± 95% CI (%)" in table and "robust - clean (%)" in table
    assert "60.00 ± " in table and "+12.00 ± " in table and "-10.00 ± " in table
    write_csv(tmp_path / "r.csv", [a, b], ["before", "after"])
    with open(tmp_path / "r.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == CSV_FIELDS + ROBUST_CSV_FIELDS
    assert float(rows[1]["robust_diff_mean"]) == pytest.approx(0.12)
    assert rows[0]["robust_diff_mean"] == ""
    write_json(tmp_path / "r.json", [a, b], ["before", "after"], {}, [])
    rec = json.loads((tmp_path / "r.json").read_text())["results"][0]
    assert rec["robust_values"] == [0.4, 0.5, 0.9, 0.6, 0.6]
    assert rec["robust_minus_clean_mean"] == pytest.approx(-0.1)


# ---------------------------------------------------------------------------
# command lines
# ---------------------------------------------------------------------------


def _fewshot(toy, out, *attack):
    args = ["--encoder", str(toy / "a.pth"), "--encoder", str(toy / "b.pth"),
            "--manifest", str(toy / "toy.tsv"), "--ways", "3", "--shots", "1", "2",
            "--queries", "3", "--episodes", "12", "--classifier", "ncm", "knn",
            "--num-frames", "32", "--no-progress", "--cache-dir", str(toy / "cache"),
            "--out", str(out)] + list(attack)
    assert fewshot.main(args) == 0
    return json.loads((out / "fewshot.json").read_text())


def test_fewshot_cli_clean_and_robust(toy, tmp_path, capsys):
    plain = _fewshot(toy, tmp_path / "plain")
    assert plain["settings"]["attack"] is None
    assert all("robust_mean" not in r for r in plain["results"])
    zero = _fewshot(toy, tmp_path / "zero", "--attack-eps-db", "0", "--attack-steps", "2")
    white = _fewshot(toy, tmp_path / "white", "--attack-eps-db", "3",
                     "--attack-steps", "4")
    assert "robust - clean" in capsys.readouterr().out
    assert white["settings"]["attack"]["num_attacked_clips"] == 18  # all queries, once
    for p, z, w in zip(plain["results"], zero["results"], white["results"]):
        # Same episodes: the clean values are those of the run without attack.
        assert p["values"] == z["values"] == w["values"]
        assert z["robust_values"] == z["values"]  # budget 0, no noise: robust = clean
        assert z["robust_minus_clean_mean"] == 0.0
    for enc in ("a", "b"):
        ncm = [r for r in white["results"] if r["encoder"] == enc and r["classifier"] == "ncm"]
        for r in ncm:
            assert r["mean"] > 0.45  # well above chance (1/3) when clean
            assert r["robust_mean"] < r["mean"] - 0.25
    # Noise 120 dB below the signal: every prediction stays (at 80 dB one near-tie of
    # these random encoders already flips; the embeddings' change is checked above).
    quiet = _fewshot(toy, tmp_path / "quiet", "--attack-snr-db", "120")
    assert all(r["robust_values"] == r["values"] for r in quiet["results"])
    with open(tmp_path / "white" / "fewshot.csv", newline="") as f:
        assert list(next(csv.DictReader(f))) == CSV_FIELDS + ROBUST_CSV_FIELDS


def test_fewshot_cli_transfer_attacks_targets_with_the_source(toy, tmp_path):
    # Source b, targets a and b: b's scores are those of b's own white-box attack.
    transfer = _fewshot(toy, tmp_path / "t", "--attack-eps-db", "3", "--attack-steps", "4",
                        "--attack-source", str(toy / "b.pth"))
    white = _fewshot(toy, tmp_path / "w", "--attack-eps-db", "3", "--attack-steps", "4")
    assert "transfer from" in transfer["settings"]["attack"]["description"]
    for t, w in zip(transfer["results"], white["results"]):
        assert t["values"] == w["values"]
        if t["encoder"] == "b":
            assert t["robust_values"] == w["robust_values"]
    a_t = [r["robust_mean"] for r in transfer["results"] if r["encoder"] == "a"]
    a_w = [r["robust_mean"] for r in white["results"] if r["encoder"] == "a"]
    assert a_t != a_w


def test_probe_cli_with_attacks(toy, tmp_path, capsys):
    base = ["--encoder", str(toy / "a.pth"), "--train-manifest", str(toy / "toy.tsv"),
            "--test-manifest", str(toy / "toy.tsv"), "--knn", "1", "--num-frames", "32",
            "--no-progress", "--cache-dir", str(toy / "cache")]
    out = tmp_path / "p"
    assert probe.main(base + ["--out", str(out), "--attack-eps-db", "3",
                              "--attack-steps", "4"]) == 0
    data = json.loads((out / "probe.json").read_text())
    assert data["settings"]["attack"]["num_attacked_clips"] == 18
    for r in data["results"]:
        assert r["unit"] == "clip" and len(r["robust_values"]) == 18
        assert r["mean"] == 1.0 and r["robust_mean"] < 0.5  # train = test: clean is easy
    out = tmp_path / "z"
    assert probe.main(base + ["--out", str(out), "--attack-eps-db", "0",
                              "--no-logreg"]) == 0
    data = json.loads((out / "probe.json").read_text())
    assert all(r["robust_values"] == r["values"] for r in data["results"])
    # Multi-label data with --no-logreg has no differentiable classifier for PGD.
    rows = (toy / "toy.label").read_text().split()
    (tmp_path / "multi.label").write_text("".join(r + ",loud\n" if i % 2 else r + "\n"
                                                  for i, r in enumerate(rows)))
    capsys.readouterr()
    code = probe.main(base + ["--out", str(tmp_path / "m"), "--no-logreg",
                              "--train-labels", str(tmp_path / "multi.label"),
                              "--test-labels", str(tmp_path / "multi.label"),
                              "--attack-eps-db", "1"])
    assert code == 2 and "--no-logreg" in capsys.readouterr().err
    out = tmp_path / "m2"
    assert probe.main(base + ["--out", str(out), "--attack-eps-db", "3",
                              "--attack-steps", "3",
                              "--train-labels", str(tmp_path / "multi.label"),
                              "--test-labels", str(tmp_path / "multi.label")]) == 0
    data = json.loads((out / "probe.json").read_text())
    logreg = [r for r in data["results"] if r["classifier"] == "logreg"][0]
    assert logreg["metric"] == "mAP" and logreg["robust_mean"] < logreg["mean"]
