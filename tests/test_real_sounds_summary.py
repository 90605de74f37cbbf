"""examples/real_sounds/summarize.py: gains are per-episode differences averaged over
runs, paired with the start on the same episodes."""

import importlib.util
import json
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "examples", "real_sounds", "summarize.py")


def _module():
    spec = importlib.util.spec_from_file_location("summarize", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _write_run(root, tuned):
    for s in ("speakers", "fillets_voices", "sonicpi_families", "ufoai_categories"):
        os.makedirs(root / "fewshot" / s)
        results = [{"encoder": "mae", "classifier": "ncm", "shots": 5, "values": [0.5, 0.5, 0.4]},
                   {"encoder": "uamix", "classifier": "ncm", "shots": 5, "values": tuned}]
        (root / "fewshot" / s / "fewshot.json").write_text(json.dumps({"results": results}))


def test_gain_averages_runs_per_episode(tmp_path, capsys):
    mod = _module()
    _write_run(tmp_path / "a", [0.6, 0.8, 0.4])
    _write_run(tmp_path / "b", [0.8, 0.6, 0.4])
    rows, gains = mod.summarize(mod.load_runs([tmp_path / "a", tmp_path / "b"]), "mae")
    # per episode: mean over runs (0.7, 0.7, 0.4) minus the start (0.5, 0.5, 0.4)
    mean, ci, runs, low, high = rows[0]["uamix"]
    assert mean == pytest.approx(100 * (0.2 + 0.2 + 0.0) / 3)
    assert runs == 2 and ci > 0
    assert low == high == pytest.approx(mean)  # both runs gain the same on average
    assert rows[0]["mae"] == pytest.approx(100 * 1.4 / 3)
    assert [v for cell in gains["uamix"] for v in cell] == pytest.approx([mean] * 8)
    assert mod.main([str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    out = capsys.readouterr().out
    assert "| speakers | ncm | 5 | 46.7 | +13.3 ± " in out and "[+13.3, +13.3]" in out


def test_spread_over_runs(tmp_path, capsys):
    mod = _module()
    _write_run(tmp_path / "a", [0.6, 0.6, 0.4])  # +6.7 points
    _write_run(tmp_path / "b", [0.5, 0.5, 0.4])  # +0
    rows, _ = mod.summarize(mod.load_runs([tmp_path / "a", tmp_path / "b"]), "mae")
    _, _, _, low, high = rows[0]["uamix"]
    assert low == pytest.approx(0.0, abs=1e-9) and high == pytest.approx(100 * 0.2 / 3)
    mod.main([str(tmp_path / "a"), str(tmp_path / "b")])
    assert "each run: uamix +6.67 / +0.00" in capsys.readouterr().out


def test_missing_run_and_start_are_named(tmp_path):
    mod = _module()
    with pytest.raises(SystemExit, match="fewshot.json is missing"):
        mod.load_runs([tmp_path])
    _write_run(tmp_path / "a", [0.6, 0.8, 0.4])
    with pytest.raises(SystemExit, match="no encoder named 'start'"):
        mod.summarize(mod.load_runs([tmp_path / "a"]), "start")


def _plot_module():
    spec = importlib.util.spec_from_file_location(
        "plot_monitor", os.path.join(REPO, "examples", "real_sounds", "plot_monitor.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_monitor_plot(tmp_path):
    mod = _plot_module()
    with pytest.raises(SystemExit, match="results.json is missing"):
        mod.load_curves(str(tmp_path))
    curves = {"uamix": {"speakers": [[100, 60.0, 55.0], [200, 65.0, 57.5]],
                        "ufoai": [[100, 70.0, 60.0], [200, 69.0, 61.0]]},
              "none": {"speakers": [[100, 60.0, 55.0], [200, 64.0, 56.0]], "ufoai": []}}
    (tmp_path / "results.json").write_text(json.dumps({"monitor_curves": curves}))
    assert mod.load_curves(str(tmp_path)) == curves
    assert mod.main([str(tmp_path), "--metric", "ncm"]) == 0
    assert (tmp_path / "monitor.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (tmp_path / "results.json").write_text(json.dumps({"monitor_curves": {}}))
    with pytest.raises(SystemExit, match="no monitor curves"):
        mod.load_curves(str(tmp_path))
