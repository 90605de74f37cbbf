"""The batch front end and the manifest dataset: one data path for every task."""

import numpy as np
import pytest
import soundfile as sf
import torch

from uamix_fairseq.audio.decode import AudioError
from uamix_fairseq.data.audio_dataset import AudioClipDataset
from uamix_fairseq.audio.features import compute_fbank, pad_or_crop
from uamix_fairseq.audio.frontend import FrontendConfig, batch_fbank, model_input
from uamix_fairseq.manifest import write_manifest


def _clip(n, seed):
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 16000
    return (0.3 * np.sin(2 * np.pi * (200 + 50 * seed) * t) + 0.05 * rng.standard_normal(n)).astype(np.float32)


def test_batch_fbank_equals_per_clip_features():
    cfg = FrontendConfig(num_frames=48)
    clips = [torch.from_numpy(_clip(n, i)) for i, n in enumerate((8000, 3000, 400))]
    clips = [c - c.mean() for c in clips]
    batch = torch.zeros(3, 8000, dtype=torch.float64)
    for i, c in enumerate(clips):
        batch[i, : len(c)] = c
    fbank, valid = batch_fbank(batch, torch.tensor([len(c) for c in clips]), cfg)
    assert fbank.shape == (3, 48, 128) and fbank.dtype == torch.float32
    assert valid.tolist() == [48, 17, 1]
    for i, c in enumerate(clips):
        alone = pad_or_crop(compute_fbank(c, subtract_mean=False), 48)
        torch.testing.assert_close(fbank[i], alone, atol=1e-4, rtol=0)
    x = model_input(fbank, cfg)
    torch.testing.assert_close(x[:, 0], (fbank - cfg.norm_mean) / (2 * cfg.norm_std))
    assert cfg.max_samples == 47 * 160 + 400


def _dataset(tmp_path, lengths, rates=None, **kw):
    root = tmp_path / "audio"
    root.mkdir()
    entries = []
    for i, n in enumerate(lengths):
        name = f"c{i}.wav"
        sf.write(root / name, _clip(n, i), (rates or {}).get(i, 16000))
        entries.append((name, n))
    write_manifest(tmp_path / "train.tsv", str(root), entries)
    return AudioClipDataset(str(tmp_path / "train.tsv"), **kw)


def test_random_crops_are_seeded_by_epoch(tmp_path):
    ds = _dataset(tmp_path, [6000, 1000], max_samples=2000, seed=3)
    a = ds[0]["source"]
    assert a.shape == (2000,) and abs(float(a.mean())) < 1e-6
    assert torch.equal(ds[0]["source"], a)  # same epoch, same crop
    ds.set_epoch(2)
    assert not torch.equal(ds[0]["source"], a)
    assert ds[1]["source"].shape == (1000,)  # short clips are not padded here
    ordered = ds.ordered_indices()
    assert sorted(ordered.tolist()) == [0, 1]


def test_eval_crop_starts_at_zero(tmp_path):
    ds = _dataset(tmp_path, [6000], max_samples=2000, random_crop=False)
    full = torch.from_numpy(sf.read(tmp_path / "audio" / "c0.wav", dtype="float32")[0])
    torch.testing.assert_close(ds[0]["source"], full[:2000] - full[:2000].mean())


def test_collater_pads_and_keeps_float64(tmp_path):
    ds = _dataset(tmp_path, [3000, 1000], max_samples=4000)
    batch = ds.collater([ds[0], ds[1]])
    wav = batch["net_input"]["waveform"]
    assert wav.dtype == torch.float64 and wav.shape == (2, 3000)
    assert batch["net_input"]["lengths"].tolist() == [3000, 1000]
    assert torch.all(wav[1, 1000:] == 0)
    assert batch["id"].tolist() == [0, 1]


def test_single_clip_last_batch_is_merged(tmp_path):
    ds = _dataset(tmp_path, [1000] * 5, max_samples=2000)
    batches = ds.batch_by_size(np.arange(5), max_sentences=2)
    assert [len(b) for b in batches] == [2, 3]


def test_bad_clip_error_names_manifest_or_is_skipped(tmp_path):
    ds = _dataset(tmp_path, [3000, 3000], rates={1: 8000}, max_samples=4000)
    with pytest.raises(AudioError) as e:
        ds[1]
    assert "c1.wav" in str(e.value) and "train.tsv" in str(e.value)
    assert "skip_bad_audio" in str(e.value)
    skipping = AudioClipDataset(str(tmp_path / "train.tsv"), max_samples=4000,
                                skip_bad_audio=True)
    batch = skipping.collater([skipping[0], skipping[1]])
    assert batch["id"].tolist() == [0] and skipping.skipped == 1
    assert skipping.collater([skipping[1]]) == {}


def _old_crop(ds, path, index, resample=False):
    """The dataset before partial reads: decode the whole file, then crop it."""
    from uamix_fairseq.audio.decode import load_audio
    wav = load_audio(path, resample=resample)
    excess = wav.shape[0] - ds.max_samples
    if excess <= 0:
        return wav
    start = 0
    if ds.random_crop:
        rng = np.random.default_rng((ds.seed, ds.epoch, index))
        start = int(rng.integers(0, excess + 1))
    return wav[start:start + ds.max_samples]


def test_crops_of_long_files_equal_whole_read_then_crop(tmp_path, monkeypatch):
    # Clips over 60 s are read in part (see load_audio); the crops must not change.
    root = tmp_path / "audio"
    root.mkdir()
    entries = []
    for i, (seconds, rate) in enumerate([(61, 16000), (62.5, 16000), (2, 16000), (61, 22050)]):
        n = int(seconds * rate)
        sf.write(root / f"c{i}.wav", 0.2 * np.random.default_rng(i).standard_normal(n), rate)
        entries.append((f"c{i}.wav", n))
    write_manifest(tmp_path / "train.tsv", str(root), entries)
    paths = [str(root / f"c{i}.wav") for i in range(4)]
    for random_crop in (True, False):
        ds = AudioClipDataset(str(tmp_path / "train.tsv"), max_samples=20480, seed=5,
                              resample=True, random_crop=random_crop)
        for epoch in (1, 2, 3):
            ds.set_epoch(epoch)
            for i in range(4):
                old = _old_crop(ds, paths[i], i, resample=True)
                assert torch.equal(ds[i]["source"], old - old.mean()), (random_crop, epoch, i)
    # ... and only the crop was decoded from the long 16 kHz file.
    reads = []
    real_read = sf.read
    monkeypatch.setattr(sf, "read", lambda f, *a, **kw: reads.append(kw) or real_read(f, *a, **kw))
    ds.set_epoch(1)
    ds[0]
    assert [(r.get("start"), r.get("stop")) for r in reads] == [(0, 20480), (61 * 16000 - 1, None)]


def test_batch_shrunk_below_the_minimum_is_dropped_and_counted(tmp_path):
    """Issue 11.8: a batch that skipping bad audio leaves with one clip is dropped
    (an empty batch: fairseq runs its dummy batch instead), counted, not fatal."""
    _dataset(tmp_path, [3000, 3000, 3000], rates={1: 8000}, max_samples=4000)
    ds = AudioClipDataset(str(tmp_path / "train.tsv"), max_samples=4000,
                          skip_bad_audio=True, min_batch_size=2)
    assert ds.collater([ds[0], ds[1]]) == {} and ds.dropped_batches == 1
    assert ds.collater([ds[0], ds[2]])["id"].tolist() == [0, 2]
    assert ds.collater([ds[1]]) == {} and ds.dropped_batches == 2


def test_batches_below_the_minimum_are_refused_or_merged(tmp_path):
    ds = _dataset(tmp_path, [1000] * 5, max_samples=2000, min_batch_size=3)
    assert [len(b) for b in ds.batch_by_size(np.arange(5), max_sentences=3)] == [5]
    with pytest.raises(ValueError, match=r"dataset.max_tokens=1000"):
        ds.batch_by_size(np.arange(5), max_tokens=1000)


# ------------------------------------------------------------------ split sizes (tasks)
def _task_data(tmp_path, valid_clips):
    """A task.data folder: 4 train clips, `valid_clips` valid clips."""
    root = tmp_path / "audio"
    root.mkdir()
    for i in range(4 + valid_clips):
        sf.write(root / f"c{i}.wav", _clip(4000, i), 16000)
    write_manifest(tmp_path / "train.tsv", str(root), [(f"c{i}.wav", 4000) for i in range(4)])
    if valid_clips:
        write_manifest(tmp_path / "valid.tsv", str(root),
                       [(f"c{i}.wav", 4000) for i in range(4, 4 + valid_clips)])
    return str(tmp_path)


def _load(data, split):
    pytest.importorskip("fairseq")
    from uamix_fairseq.tasks.base import frontend_config, unlabelled_dataset
    from uamix_fairseq.tasks.uamix_contrastive import UamixContrastiveConfig

    cfg = UamixContrastiveConfig(data=data, num_frames=32)
    return unlabelled_dataset(cfg, frontend_config(cfg), split)


def test_a_one_clip_valid_set_is_refused(tmp_path):
    """One clip has no negatives: loss 0 / accuracy 100 (issue 11, item 5)."""
    data = _task_data(tmp_path, valid_clips=1)
    with pytest.raises(ValueError) as err:
        _load(data, "valid")
    message = str(err.value)
    assert "valid.tsv" in message and "1 clip" in message and "at least 2" in message
    assert "dataset.disable_validation=true" in message
    assert len(_load(data, "train")) == 4  # the train split has no such minimum


def test_a_two_clip_valid_set_loads(tmp_path):
    assert len(_load(_task_data(tmp_path, valid_clips=2), "valid")) == 2


def test_a_missing_valid_set_names_disable_validation(tmp_path):
    data = _task_data(tmp_path, valid_clips=0)
    with pytest.raises(FileNotFoundError) as err:
        _load(data, "valid")
    assert "valid.tsv" in str(err.value) and "dataset.disable_validation=true" in str(err.value)


def test_every_view_field_of_the_task_reaches_the_views(tmp_path):
    pytest.importorskip("fairseq")
    import dataclasses

    from uamix_fairseq.modules.views import ViewConfig
    from uamix_fairseq.tasks.uamix_contrastive import UamixContrastiveConfig, UamixContrastiveTask

    data = _task_data(tmp_path, valid_clips=2)
    # Every field set away from its default, each to a distinct value.
    values = {"time_roll": False, "gain_db": 3.5, "time_mask_fraction": 0.05,
              "freq_mask_fraction": 0.15, "mix_ratio": 0.1, "rrc_min_scale": 0.7,
              "rrc_max_scale": 1.3, "rrc_freq": False, "fader_db": 4.0}
    assert set(values) == {f.name for f in dataclasses.fields(ViewConfig)}
    assert all(values[f.name] != f.default for f in dataclasses.fields(ViewConfig))
    cfg = UamixContrastiveConfig(data=data, num_frames=32,
                                 **{f"view_{k}": v for k, v in values.items()})
    task = UamixContrastiveTask(cfg)
    assert dataclasses.asdict(task.view_cfg) == values
