"""examples/real_sounds/run_benchmark.py, with training and export stubbed out: what it
passes to the few-shot evaluation and records, and the input it refuses up front."""

import importlib.util
import json
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "examples", "real_sounds", "run_benchmark.py")
SETS = ("speakers", "fillets_voices", "sonicpi_families", "ufoai_categories")


@pytest.fixture
def rb():
    spec = importlib.util.spec_from_file_location("run_benchmark", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _data(root, pool="pool"):
    os.makedirs(root / pool)
    for split in ("train", "valid"):
        (root / pool / f"{split}.tsv").write_text("/x\n")
    for s in SETS:
        (root / f"{s}.tsv").write_text("/x\n")
    return root


def _stub(rb, monkeypatch):
    """Record the training stages and few-shot command lines instead of running them."""
    calls = {"stages": [], "fewshot": []}
    monkeypatch.setattr(rb, "train_stages",
                        lambda stages, out, threads: calls["stages"].extend(stages) or {})
    monkeypatch.setattr(rb, "export_encoder", lambda name, out: f"{out}/encoders/{name}.pth")
    monkeypatch.setattr(rb, "monitor_curve", lambda log, suffixes: {x: [] for x in suffixes})

    def fewshot(argv):
        calls["fewshot"].append(argv)
        out = argv[argv.index("--out") + 1]
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "fewshot.json"), "w") as f:
            json.dump({"results": []}, f)
        return 0

    import uamix_fairseq.evaluation.fewshot as fs
    monkeypatch.setattr(fs, "main", fewshot)
    return calls


def test_pool_and_windows_reach_tuning_and_fewshot(rb, monkeypatch, tmp_path):
    data = _data(tmp_path / "data", "pool_nomusic")
    calls = _stub(rb, monkeypatch)
    out = tmp_path / "out"
    assert rb.main([str(data), str(out), "--mae", "/m.pth", "--pool", "pool_nomusic",
                    "--windows", "8", "--supervised", "none"]) == 0
    assert [name for name, _, _ in calls["stages"]] == ["uamix", "none"]
    for _, config, overrides in calls["stages"]:
        assert config == "real_sounds"
        assert f"task.data={data / 'pool_nomusic'}" in overrides
        assert "model.audiomae_checkpoint=/m.pth" in overrides
    assert "criterion.mix_mode=none" in calls["stages"][1][2]
    assert len(calls["fewshot"]) == len(SETS)
    for argv in calls["fewshot"]:
        assert argv[argv.index("--windows") + 1] == "8"
        assert argv.count("--encoder") == 3  # the start, uamix, none
    results = json.loads((out / "results.json").read_text())
    assert (results["pool"], results["windows"]) == ("pool_nomusic", 8)


def test_default_reads_the_first_crop(rb, monkeypatch, tmp_path):
    data = _data(tmp_path / "data")
    calls = _stub(rb, monkeypatch)
    assert rb.main([str(data), str(tmp_path / "out"), "--mae", "/m.pth",
                    "--supervised", "none"]) == 0
    assert all(argv[argv.index("--windows") + 1] == "1" for argv in calls["fewshot"])


def test_bad_windows_and_missing_pool_are_refused_before_training(rb, monkeypatch, tmp_path,
                                                                   capsys):
    data = _data(tmp_path / "data")
    calls = _stub(rb, monkeypatch)
    assert rb.main([str(data), str(tmp_path / "o1"), "--mae", "/m.pth", "--windows", "0"]) == 1
    assert "--windows must be at least 1" in capsys.readouterr().err
    assert rb.main([str(data), str(tmp_path / "o2"), "--mae", "/m.pth",
                    "--pool", "pool_nomusic"]) == 1
    err = capsys.readouterr().err
    assert "pool_nomusic/train.tsv" in err and "build_real_sounds.py" in err
    assert calls["stages"] == [] and calls["fewshot"] == []
