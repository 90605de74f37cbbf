"""The HEAR 2021 benchmark API for this project's encoders, so that hear-eval-kit (and
hear-validator) can evaluate an AudioMAE checkpoint before and after uaMix-MAE tuning:

    python -m heareval.embeddings.runner uamix_fairseq.tools.hear --model tuned.pth \\
        --tasks-dir tasks --model-options '{"num_frames": 512}'

API (as hear-eval-kit calls it):

* ``load_model(model_file_path, **options) -> torch.nn.Module`` with ``sample_rate``
  (16000), ``scene_embedding_size`` and ``timestamp_embedding_size`` (both the
  encoder width D). ``model_file_path`` is anything ``load_audiomae`` reads; there are
  no default weights. Options (hear-eval-kit's ``--model-options`` JSON): ``num_frames``
  (encoder input length in 10 ms frames, default the file's own), ``norm``
  (``audioset``/``esc50``/``speechcommands``), ``pooling`` (``mean``/``cls``),
  ``batch_size`` (windows per forward pass), ``num_heads``, ``max_fbank_frames``
  (frames turned into fbank at once).
* ``get_scene_embeddings(audio [n_sounds, n_samples], model) -> [n_sounds, D]``
* ``get_timestamp_embeddings(audio, model) -> ([n_sounds, n_timestamps, D],
  [n_sounds, n_timestamps])``, timestamps in milliseconds.

How a clip becomes embeddings. The whole clip (16 kHz, in [-1, 1]) becomes one Kaldi
fbank (``features.compute_fbank``, the clip's mean removed), cut into consecutive,
non-overlapping windows of the encoder's ``T`` frames; the last one is zero-padded in
the raw log-mel domain, as AudioMAE pads short clips, then each window is normalised
and encoded.

* Scene embedding: the encoder's pooled embedding of each window (``encoder.pool``:
  mean of the patch tokens, or cls; then ``fc_norm`` for fine-tuned files), averaged
  over the windows with weights proportional to each window's real (non-padding)
  frames. A clip of exactly one window gives ``encoder.embed`` of its fbank; a clip
  shorter than a window gives the padded window's embedding; a partial last window
  counts by how much audio it holds instead of as a whole window of near-silence.
* Timestamp embeddings: one per time patch (16 frames = 160 ms hop): the mean of the
  patch row's frequency tokens (8 for 128 mel bins), through ``fc_norm`` for
  fine-tuned files. Time patch ``g`` (counted over the whole clip) covers frames
  ``16g .. 16g+15``, whose centres lie at ``10 i + 12.5`` ms, so its timestamp is their
  mean, ``160 g + 87.5`` ms. Every time patch whose centre lies inside the clip is
  returned, so the last timestamp is within 160 ms of the end and never past it (a
  clip shorter than 87.5 ms gets one embedding, stamped at its middle).

Sounds are processed in chunks (at most ``max_fbank_frames`` fbank frames at a time)
and windows in batches of ``batch_size``, on the model's device; results come back on
the audio's device, float32. Nothing here imports fairseq.
"""

from typing import Optional, Tuple

import torch
from torch import Tensor, nn

from ..modules.audiomae import AudioMAEEncoder, load_audiomae
from ..audio.features import NORM_STATS, compute_fbank, normalize_fbank, num_frames as frames_for

__all__ = [
    "HEARModel",
    "get_scene_embeddings",
    "get_timestamp_embeddings",
    "load_model",
]

SAMPLE_RATE = 16000
FRAME_SHIFT_MS = 10.0
FRAME_LENGTH_MS = 25.0
MIN_SAMPLES = 400  # one 25 ms frame


class HEARModel(nn.Module):
    """An AudioMAE encoder with the attributes and settings the HEAR API needs."""

    sample_rate = SAMPLE_RATE

    def __init__(self, encoder: AudioMAEEncoder, norm: str = "audioset",
                 pooling: str = "mean", batch_size: int = 8,
                 max_fbank_frames: int = 65536):
        super().__init__()
        if norm not in NORM_STATS:
            raise ValueError(f"norm must be one of {sorted(NORM_STATS)}, got {norm!r}")
        if pooling not in ("mean", "cls"):
            raise ValueError(f"pooling must be 'mean' or 'cls', got {pooling!r}")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if int(max_fbank_frames) < 1:
            raise ValueError(f"max_fbank_frames must be at least 1, got {max_fbank_frames}")
        self.encoder = encoder.eval()
        self.norm_mean, self.norm_std = NORM_STATS[norm]
        self.pooling = pooling
        self.batch_size = int(batch_size)
        self.max_fbank_frames = int(max_fbank_frames)
        self.scene_embedding_size = int(encoder.embed_dim)
        self.timestamp_embedding_size = int(encoder.embed_dim)

    @property
    def window_frames(self) -> int:
        """Encoder input length T in fbank frames."""
        return self.encoder.cfg.num_frames

    @property
    def patch_frames(self) -> int:
        return self.encoder.cfg.patch_size

    @property
    def hop_ms(self) -> float:
        """Spacing of the timestamp embeddings: one time patch."""
        return self.patch_frames * FRAME_SHIFT_MS

    @property
    def first_timestamp_ms(self) -> float:
        """Centre of time patch 0: the mean of its frames' centres."""
        return (self.patch_frames - 1) / 2 * FRAME_SHIFT_MS + FRAME_LENGTH_MS / 2

    def forward(self, audio: Tensor) -> Tensor:
        """Scene embeddings; see :func:`get_scene_embeddings`."""
        return get_scene_embeddings(audio, self)

    def num_timestamps(self, num_samples: int) -> int:
        """Time patches whose centre lies inside a clip of ``num_samples`` samples."""
        duration_ms = num_samples * 1000.0 / self.sample_rate
        count = int((duration_ms - self.first_timestamp_ms) // self.hop_ms) + 1
        return max(1, count)


def load_model(model_file_path: str = "", **kwargs) -> HEARModel:
    """An encoder of this project wrapped for the HEAR API.

    Args:
        model_file_path: an official AudioMAE ``.pth``, a file written by
            ``uamix_fairseq.tools.export`` / ``save_audiomae``, or a fairseq checkpoint of this
            plugin. Required: no weights are bundled and none can be downloaded.
        num_frames: encoder input length in 10 ms frames (multiple of 16); default the
            file's own (1024 for AudioSet AudioMAE). The positional table is cropped or
            interpolated along time for other values, as ``load_audiomae`` does.
        norm, pooling, batch_size, num_heads, max_fbank_frames: see the module docstring.
    """
    if not model_file_path:
        raise ValueError(
            "uamix_fairseq.tools.hear.load_model needs the path of an encoder checkpoint (an "
            "AudioMAE .pth, a file written by `python -m uamix_fairseq.tools.export`, or a "
            "fairseq checkpoint of this plugin); no default weights are bundled and none "
            "can be downloaded. With hear-eval-kit pass it as --model PATH; with "
            "hear-validator as -m PATH."
        )
    options = dict(kwargs)
    num_frames: Optional[int] = options.pop("num_frames", None)
    num_heads: Optional[int] = options.pop("num_heads", None)
    allowed = {"norm", "pooling", "batch_size", "max_fbank_frames"}
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise TypeError(
            f"uamix_fairseq.tools.hear.load_model: unknown option(s) {unknown}; accepted: "
            f"{sorted(allowed | {'num_frames', 'num_heads'})}"
        )
    if num_frames is not None and (int(num_frames) < 16 or int(num_frames) % 16):
        raise ValueError(f"num_frames={num_frames} must be a positive multiple of 16")
    encoder = load_audiomae(model_file_path,
                            num_frames=None if num_frames is None else int(num_frames),
                            num_heads=None if num_heads is None else int(num_heads))
    return HEARModel(encoder, **options)


# ---------------------------------------------------------------------------
# internals
# ---------------------------------------------------------------------------


def _check_audio(audio, model) -> Tensor:
    if not isinstance(model, HEARModel):
        raise TypeError(f"model must come from uamix_fairseq.tools.hear.load_model, got "
                        f"{type(model).__name__}")
    if not isinstance(audio, Tensor):
        raise TypeError(f"audio must be a torch.Tensor [n_sounds, n_samples], got "
                        f"{type(audio).__name__}")
    if audio.ndim != 2:
        raise ValueError(f"audio must be [n_sounds, n_samples] mono at {model.sample_rate} "
                         f"Hz, got shape {tuple(audio.shape)}")
    if not audio.is_floating_point():
        raise ValueError(f"audio must be float samples in [-1, 1], got {audio.dtype}")
    if audio.shape[0] and audio.shape[1] < MIN_SAMPLES:
        raise ValueError(f"audio has {audio.shape[1]} samples per sound, fewer than one 25 "
                         f"ms frame ({MIN_SAMPLES} samples at {model.sample_rate} Hz)")
    return audio


def _encoder_device(model: HEARModel):
    p = model.encoder.cls_token
    return p.device, p.dtype


@torch.no_grad()
def _window_outputs(audio: Tensor, model: HEARModel, timestamps: bool):
    """Run every window of every sound through the encoder.

    Returns (pooled [n, W, D], real frames per window [W], patch rows [n, W * Tp, D] or
    None), float32 on the model's device.
    """
    device, dtype = _encoder_device(model)
    n, num_samples = audio.shape
    t_win, p = model.window_frames, model.patch_frames
    total = frames_for(num_samples, model.sample_rate)
    num_windows = -(-total // t_win)
    real = torch.clamp(total - torch.arange(num_windows) * t_win, max=t_win)
    grid_t = t_win // p
    grid_f = model.encoder.cfg.num_mel_bins // p

    pooled_out, rows_out = [], []
    per_chunk = max(1, model.max_fbank_frames // max(total, 1))
    for start in range(0, n, per_chunk):
        wav = audio[start:start + per_chunk].to(device=device, dtype=torch.float32)
        fbank = compute_fbank(wav, sample_rate=model.sample_rate,
                              num_mel_bins=model.encoder.cfg.num_mel_bins)  # [b, F, bins]
        b = fbank.shape[0]
        pad = num_windows * t_win - total
        if pad:  # zeros in the raw log-mel domain, before normalisation (AudioMAE)
            fbank = torch.nn.functional.pad(fbank, (0, 0, 0, pad))
        windows = fbank.reshape(b * num_windows, t_win, fbank.shape[-1])
        pooled, rows = [], []
        for w0 in range(0, windows.shape[0], model.batch_size):
            x = normalize_fbank(windows[w0:w0 + model.batch_size], model.norm_mean,
                                model.norm_std).unsqueeze(1).to(dtype)
            tokens = model.encoder(x)  # [B, 1 + N, D]
            pooled.append(model.encoder.pool(tokens, model.pooling).float())
            if timestamps:
                patches = tokens[:, 1:, :].reshape(tokens.shape[0], grid_t, grid_f, -1)
                row = patches.mean(dim=2)  # token k = (t = k // grid_f, f = k % grid_f)
                if model.encoder.final_norm == "fc_norm":
                    row = model.encoder.fc_norm(row)
                rows.append(row.float())
        pooled_out.append(torch.cat(pooled).reshape(b, num_windows, -1))
        if timestamps:
            rows_out.append(torch.cat(rows).reshape(b, num_windows * grid_t, -1))
    return (torch.cat(pooled_out), real.to(device),
            torch.cat(rows_out) if timestamps else None)


# ---------------------------------------------------------------------------
# the HEAR API
# ---------------------------------------------------------------------------


def get_scene_embeddings(audio: Tensor, model: HEARModel) -> Tensor:
    """One embedding per sound: ``audio`` [n_sounds, n_samples] (16 kHz mono, [-1, 1])
    -> float32 [n_sounds, model.scene_embedding_size], on the audio's device."""
    audio = _check_audio(audio, model)
    if audio.shape[0] == 0:
        return audio.new_zeros(0, model.scene_embedding_size, dtype=torch.float32)
    pooled, real, _ = _window_outputs(audio, model, timestamps=False)
    weights = real.float() / real.sum()
    scene = (pooled * weights[None, :, None]).sum(dim=1)
    return scene.to(device=audio.device, dtype=torch.float32)


def get_timestamp_embeddings(audio: Tensor, model: HEARModel) -> Tuple[Tensor, Tensor]:
    """Embeddings every 160 ms: ``audio`` [n_sounds, n_samples] -> (float32
    [n_sounds, n_timestamps, model.timestamp_embedding_size], float32 timestamps
    [n_sounds, n_timestamps] in milliseconds at the centre of each time patch)."""
    audio = _check_audio(audio, model)
    n, num_samples = audio.shape
    count = model.num_timestamps(num_samples) if num_samples >= MIN_SAMPLES else 0
    if n == 0:
        return (audio.new_zeros(0, count, model.timestamp_embedding_size, dtype=torch.float32),
                audio.new_zeros(0, count, dtype=torch.float32))
    _, _, rows = _window_outputs(audio, model, timestamps=True)
    emb = rows[:, :count].to(device=audio.device, dtype=torch.float32)
    # float64 arithmetic, one rounding: no drift over long audio.
    times = (torch.arange(count, dtype=torch.float64) * model.hop_ms
             + model.first_timestamp_ms)
    duration_ms = num_samples * 1000.0 / model.sample_rate
    if times[-1] > duration_ms:  # a clip shorter than half a patch: its own middle
        times[-1] = duration_ms / 2
    times = times.to(dtype=torch.float32, device=audio.device).expand(n, count).contiguous()
    return emb, times
