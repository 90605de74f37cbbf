"""AudioMAE's masked-autoencoder objective in plain PyTorch.

- ``patchify`` / ``unpatchify``: fbank [B, 1, T, F] <-> patches [B, N, p*p] in the
  encoder's token order (token k is the patch at t = k // (F/p), f = k % (F/p); pixels
  inside a patch time-major), as AudioMAE's ``patchify``.
- ``random_masking``: per-clip random choice of round(N * (1 - ratio)) visible patches.
- ``encode_visible``: the ``AudioMAEEncoder`` run on the visible patches only.
- ``MAEDecoder``: the light ViT decoder, with the official key names (``mask_token``,
  ``decoder_embed``, ``decoder_pos_embed``, ``decoder_blocks``, ``decoder_norm``,
  ``decoder_pred``), so an official pretrained file's decoder loads by name.
- ``masked_mse``: per-patch normalised targets, mean squared error over masked patches.

Nothing here imports fairseq.
"""

import logging
from typing import Dict, Optional, Tuple

import torch
from torch import nn

from .audiomae import LAYER_NORM_EPS, AudioMAEEncoder, Block, resize_pos_embed, sincos_pos_embed

logger = logging.getLogger(__name__)

DECODER_PREFIXES = ("mask_token", "decoder_embed.", "decoder_pos_embed", "decoder_blocks.",
                    "decoder_norm.", "decoder_pred.")


def patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """[B, 1, T, F] -> [B, (T/p)*(F/p), p*p], token order of the encoder."""
    if x.ndim != 4 or x.shape[1] != 1:
        raise ValueError(f"expected fbank batch [B, 1, T, F], got {tuple(x.shape)}")
    b, _, t, f = x.shape
    if t % p or f % p:
        raise ValueError(f"{t} frames x {f} mel bins is not a multiple of the patch size {p}")
    h, w = t // p, f // p
    x = x.reshape(b, h, p, w, p).permute(0, 1, 3, 2, 4)  # [B, h, w, p(time), p(freq)]
    return x.reshape(b, h * w, p * p)


def unpatchify(patches: torch.Tensor, p: int, num_frames: int, num_mel_bins: int) -> torch.Tensor:
    """Inverse of ``patchify``: [B, N, p*p] -> [B, 1, T, F]."""
    b, n, pp = patches.shape
    h, w = num_frames // p, num_mel_bins // p
    if pp != p * p or n != h * w:
        raise ValueError(f"patches {tuple(patches.shape)} do not tile {num_frames} x "
                         f"{num_mel_bins} with {p}x{p} patches")
    x = patches.reshape(b, h, w, p, p).permute(0, 1, 3, 2, 4)
    return x.reshape(b, 1, h * p, w * p)


def num_visible(num_patches: int, mask_ratio: float) -> int:
    if not 0.0 <= mask_ratio < 1.0:
        raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
    keep = int(round(num_patches * (1.0 - mask_ratio)))
    if keep < 1:
        raise ValueError(f"mask_ratio {mask_ratio} leaves no visible patch of {num_patches}")
    return keep


MASK_MODES = ("random", "time", "frequency", "time_frequency")


def _order_to_index(ids_shuffle: torch.Tensor, keep: int, dtype):
    """The first ``keep`` patches of ``ids_shuffle`` are visible, the rest masked:
    (ids_keep [B, keep], mask [B, N] (1 = masked, ``dtype``), ids_restore [B, N])."""
    ids_restore = ids_shuffle.argsort(dim=1)
    mask = torch.ones(ids_shuffle.shape, device=ids_shuffle.device, dtype=dtype)
    mask[:, :keep] = 0
    return ids_shuffle[:, :keep], mask.gather(1, ids_restore), ids_restore


def _gather_visible(tokens: torch.Tensor, index):
    """(ids_keep, mask, ids_restore) -> (visible tokens, mask, ids_restore)."""
    ids_keep, mask, ids_restore = index
    visible = tokens.gather(1, ids_keep[:, :, None].expand(-1, -1, tokens.shape[2]))
    return visible, mask, ids_restore


def _uniform(shape, generator, device):
    """Uniform noise drawn on the generator's device (CPU by default), then moved."""
    gen_device = generator.device if generator is not None else torch.device("cpu")
    return torch.rand(shape, generator=generator, device=gen_device).to(device)


def _random_index(b: int, n: int, mask_ratio: float, generator, device, dtype):
    keep = num_visible(n, mask_ratio)
    ids_shuffle = _uniform((b, n), generator, device).argsort(dim=1)
    return _order_to_index(ids_shuffle, keep, dtype)


def random_masking(tokens: torch.Tensor, mask_ratio: float,
                   generator: Optional[torch.Generator] = None):
    """Keep round(N * (1 - mask_ratio)) random tokens per clip.

    tokens [B, N, D] -> (visible [B, N_keep, D] in random order, mask [B, N] with 1 for
    masked patches (encoder token order), ids_restore [B, N]: the position of each patch
    in the shuffled order, to put decoder tokens back in place).
    """
    b, n, _ = tokens.shape
    return _gather_visible(tokens, _random_index(b, n, mask_ratio, generator,
                                                 tokens.device, tokens.dtype))


def _stripe_index(b: int, n: int, grid: Tuple[int, int], time_ratio: float,
                  freq_ratio: float, generator, device, dtype):
    gt, gf = grid
    if gt * gf != n:
        raise ValueError(f"{n} tokens do not form a {gt} x {gf} patch grid")
    for name, ratio in (("time", time_ratio), ("frequency", freq_ratio)):
        if not 0.0 <= ratio < 1.0:
            raise ValueError(f"{name} mask ratio must be in [0, 1), got {ratio}")
    mt, mf = int(round(gt * time_ratio)), int(round(gf * freq_ratio))
    if mt >= gt or mf >= gf:
        raise ValueError(f"time/frequency mask ratios {time_ratio}/{freq_ratio} leave no "
                         f"visible patch of the {gt} x {gf} grid")

    def masked_positions(size, count):  # [B, size] bool, `count` True per row
        rank = _uniform((b, size), generator, device).argsort(dim=1).argsort(dim=1)
        return rank < count

    hidden = masked_positions(gt, mt)[:, :, None] | masked_positions(gf, mf)[:, None, :]
    hidden = hidden.reshape(b, n)
    # Visible first (random order among them), then masked: a stable sort on a key.
    key = hidden.float() + 0.5 * _uniform((b, n), generator, device)
    ids_shuffle = key.argsort(dim=1)
    return _order_to_index(ids_shuffle, (gt - mt) * (gf - mf), dtype)


def stripe_masking(tokens: torch.Tensor, grid: Tuple[int, int], time_ratio: float,
                   freq_ratio: float, generator: Optional[torch.Generator] = None):
    """Mask whole time columns and/or frequency rows of the patch grid (AudioMAE's
    "time" / "frequency" / "time+frequency" masking).

    Per clip, round(grid_t * time_ratio) random time positions and round(grid_f *
    freq_ratio) random frequency positions are masked across the whole other axis; the
    visible patches are the rest, (grid_t - m_t) * (grid_f - m_f) per clip, the same for
    every clip. Same outputs as ``random_masking``.
    """
    b, n, _ = tokens.shape
    return _gather_visible(tokens, _stripe_index(b, n, grid, time_ratio, freq_ratio,
                                                 generator, tokens.device, tokens.dtype))


def mask_index(batch: int, grid: Tuple[int, int], mode: str = "random",
               mask_ratio: float = 0.8, time_ratio: float = 0.0, freq_ratio: float = 0.0,
               generator: Optional[torch.Generator] = None, device=None,
               dtype=torch.float32, num_patches: Optional[int] = None):
    """The patches ``mask_tokens`` keeps, as indices: (ids_keep [B, N_keep] for the
    encoder's ``keep``, mask [B, N] (1 = masked), ids_restore [B, N]). ``num_patches``
    defaults to the grid's."""
    n = grid[0] * grid[1] if num_patches is None else num_patches
    device = torch.device("cpu") if device is None else device
    if mode == "random":
        return _random_index(batch, n, mask_ratio, generator, device, dtype)
    if mode == "time":
        return _stripe_index(batch, n, grid, mask_ratio, 0.0, generator, device, dtype)
    if mode == "frequency":
        return _stripe_index(batch, n, grid, 0.0, mask_ratio, generator, device, dtype)
    if mode == "time_frequency":
        return _stripe_index(batch, n, grid, time_ratio, freq_ratio, generator, device, dtype)
    raise ValueError(f"mask mode must be one of {', '.join(MASK_MODES)}, got {mode!r}")


def mask_tokens(tokens: torch.Tensor, grid: Tuple[int, int], mode: str = "random",
                mask_ratio: float = 0.8, time_ratio: float = 0.0, freq_ratio: float = 0.0,
                generator: Optional[torch.Generator] = None):
    """Dispatch on ``mode`` (one of MASK_MODES): ``random`` masks ``mask_ratio`` of the
    patches; ``time`` masks ``mask_ratio`` of the time columns, ``frequency`` of the
    frequency rows; ``time_frequency`` masks ``time_ratio`` of the columns and
    ``freq_ratio`` of the rows."""
    b, n, _ = tokens.shape
    return _gather_visible(tokens, mask_index(b, grid, mode, mask_ratio, time_ratio,
                                              freq_ratio, generator, tokens.device,
                                              tokens.dtype, num_patches=n))


def visible_count(grid: Tuple[int, int], mode: str = "random", mask_ratio: float = 0.8,
                  time_ratio: float = 0.0, freq_ratio: float = 0.0) -> int:
    """Visible patches per clip under ``mask_tokens`` (validates the ratios)."""
    return mask_index(1, grid, mode, mask_ratio, time_ratio, freq_ratio,
                      torch.Generator().manual_seed(0))[0].shape[1]


def encode_visible(encoder: AudioMAEEncoder, x: torch.Tensor, mask_ratio: float,
                   generator: Optional[torch.Generator] = None, mode: str = "random",
                   time_ratio: float = 0.0, freq_ratio: float = 0.0):
    """Run ``encoder`` on a subset of the patches of ``x`` [B, 1, T, F] chosen by
    ``mask_tokens`` (random by default).

    Patch embedding + positions, keep the visible patches, prepend cls (+ its position),
    blocks, final norm. Returns (latent [B, 1 + N_keep, D], mask, ids_restore).
    """
    dtype = torch.promote_types(x.dtype, encoder.pos_embed.dtype)  # the tokens' dtype
    ids_keep, mask, ids_restore = mask_index(x.shape[0], encoder.cfg.grid, mode, mask_ratio,
                                             time_ratio, freq_ratio, generator, x.device,
                                             dtype)
    return encoder(x, keep=ids_keep), mask, ids_restore


def window_attention_mask(grid: Tuple[int, int], window: Tuple[int, int],
                          shift: bool = False) -> torch.Tensor:
    """Boolean [1 + N, 1 + N] mask (True = may attend) of local attention over the patch
    grid, with a leading cls token that attends only to itself [R].

    Patches attend within non-overlapping windows of ``window`` = (time, frequency)
    patches; with ``shift`` the window borders move by half a window along both axes
    (windows at the edges are then smaller; nothing wraps around), so that alternating
    layers connect neighbouring windows, in the spirit of the shifted windows of
    AudioMAE's local decoder (a reconstruction: no relative position bias here, the
    decoder keeps its absolute sin-cos positions).
    """
    (gt, gf), (wt, wf) = grid, window
    if wt < 1 or wf < 1:
        raise ValueError(f"decoder window must be >= 1 patch on both axes, got {window}")
    t = torch.arange(gt)[:, None].expand(gt, gf).reshape(-1)
    f = torch.arange(gf)[None, :].expand(gt, gf).reshape(-1)
    st, sf = (wt // 2, wf // 2) if shift else (0, 0)
    window_id = ((t + st) // wt) * (gf + wf) + (f + sf) // wf
    same = window_id[:, None] == window_id[None, :]
    mask = torch.zeros(1 + gt * gf, 1 + gt * gf, dtype=torch.bool)
    mask[0, 0] = True
    mask[1:, 1:] = same
    return mask


class MAEDecoder(nn.Module):
    """The MAE decoder: latent [B, 1 + N_keep, D] + ids_restore -> pixels [B, N, p*p].

    ``window`` (time, frequency patches) = (0, 0): global attention (AudioMAE's plain
    decoder); otherwise local window attention with windows shifted on every other
    layer (``window_attention_mask``). Masked dense attention: the same cost as global
    attention here, the locality is what changes.
    """

    def __init__(self, embed_dim: int, decoder_dim: int, depth: int, num_heads: int,
                 patch_size: int, grid: Tuple[int, int], mlp_ratio: float = 4.0,
                 window: Tuple[int, int] = (0, 0)):
        super().__init__()
        self.grid = tuple(grid)
        self.window = tuple(window)
        if any(self.window):
            # Not in the state dict: rebuilt from the config.
            self.register_buffer("window_mask", window_attention_mask(self.grid, self.window),
                                 persistent=False)
            self.register_buffer("shifted_window_mask",
                                 window_attention_mask(self.grid, self.window, shift=True),
                                 persistent=False)
        self.decoder_embed = nn.Linear(embed_dim, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        # Fixed sin-cos, never trained (a buffer, as the encoder's pos_embed).
        self.register_buffer("decoder_pos_embed", sincos_pos_embed(decoder_dim, *self.grid))
        self.decoder_blocks = nn.ModuleList(
            Block(decoder_dim, num_heads, mlp_ratio, 0.0) for _ in range(depth))
        self.decoder_norm = nn.LayerNorm(decoder_dim, eps=LAYER_NORM_EPS)
        self.decoder_pred = nn.Linear(decoder_dim, patch_size * patch_size)
        nn.init.normal_(self.mask_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, latent: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        x = self.decoder_embed(latent)
        b, n = ids_restore.shape
        masked = self.mask_token.expand(b, n + 1 - x.shape[1], -1)
        patches = torch.cat([x[:, 1:, :], masked], dim=1)
        patches = patches.gather(1, ids_restore[:, :, None].expand(-1, -1, x.shape[2]))
        x = torch.cat([x[:, :1, :], patches], dim=1) + self.decoder_pos_embed
        for i, blk in enumerate(self.decoder_blocks):
            if any(self.window):
                x = blk(x, self.shifted_window_mask if i % 2 else self.window_mask)
            else:
                x = blk(x)
        return self.decoder_pred(self.decoder_norm(x))[:, 1:, :]

    def load_matching(self, state: Dict[str, torch.Tensor], path="<state dict>"):
        """Load the decoder entries of an official file whose shapes match (the
        positional table is resized along time if only its length differs); returns
        (loaded keys, skipped keys)."""
        own = self.state_dict()
        loaded, skipped = [], []
        for k, v in state.items():
            if not k.startswith(DECODER_PREFIXES):
                continue
            if k == "decoder_pos_embed" and k in own and v.ndim == 3 \
                    and v.shape[2] == own[k].shape[2] and v.shape != own[k].shape \
                    and (v.shape[1] - 1) % self.grid[1] == 0:
                v = resize_pos_embed(v, ((v.shape[1] - 1) // self.grid[1], self.grid[1]),
                                     self.grid)
            if k in own and own[k].shape == v.shape:
                own[k] = v.float()
                loaded.append(k)
            else:
                skipped.append(k)
        self.load_state_dict(own, strict=True)
        if skipped:
            logger.info("%s: decoder entries not loaded (absent here or other shape): %s",
                        path, ", ".join(sorted(skipped)[:10]))
        return loaded, skipped


def normalized_targets(target_patches: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Each patch minus its mean, divided by sqrt(var + eps) over its pixels (unbiased
    variance, as MAE's ``norm_pix_loss``)."""
    mean = target_patches.mean(dim=-1, keepdim=True)
    var = target_patches.var(dim=-1, keepdim=True)
    return (target_patches - mean) / (var + eps) ** 0.5


def masked_mse(pred: torch.Tensor, target_patches: torch.Tensor, mask: torch.Tensor,
               norm_pix: bool = True) -> torch.Tensor:
    """Mean over masked patches of the per-patch mean squared error.

    pred, target_patches [B, N, p*p]; mask [B, N] (1 = masked: only those count).
    """
    target = normalized_targets(target_patches) if norm_pix else target_patches
    per_patch = ((pred.float() - target.float()) ** 2).mean(dim=-1)
    mask = mask.float()
    return (per_patch * mask).sum() / mask.sum().clamp_min(1.0)
