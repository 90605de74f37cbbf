"""The AudioMAE ViT encoder, and reading/writing AudioMAE checkpoint files.

Parameter names follow timm's ViT (and so the official AudioMAE release), so that
loading a published file is a key mapping, not surgery:

    cls_token [1, 1, D]; pos_embed [1, 1 + N, D] (fixed sin-cos, row 0 for cls);
    patch_embed.proj.{weight [D, 1, 16, 16], bias}; blocks.i.{norm1, attn.qkv,
    attn.proj, norm2, mlp.fc1, mlp.fc2}; norm (pretrained files) or fc_norm
    (fine-tuned files); head (fine-tuned files, ignored here).

Input is a normalised fbank batch [B, 1, T, F] (time frames by mel bins). A 16x16 patch
grid gives (T/16) x (F/16) patches; the conv output is flattened time-major, so token k
is the patch at (t = k // (F/16), f = k % (F/16)).

Nothing here imports fairseq.
"""

import argparse
import logging
import os
from dataclasses import asdict, dataclass
from typing import Dict, Optional

import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)

LAYER_NORM_EPS = 1e-6


@dataclass
class EncoderConfig:
    """Shape of an AudioMAE encoder; everything else follows from the tensors."""

    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    patch_size: int = 16
    num_frames: int = 1024  # T
    num_mel_bins: int = 128  # F
    drop_path_rate: float = 0.0

    @property
    def grid(self):
        """Patch grid (time patches, frequency patches)."""
        return self.num_frames // self.patch_size, self.num_mel_bins // self.patch_size

    @property
    def num_patches(self):
        t, f = self.grid
        return t * f


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read as an AudioMAE encoder."""


# --------------------------------------------------------------------------------------
# Building blocks (timm naming)
# --------------------------------------------------------------------------------------


class PatchEmbed(nn.Module):
    def __init__(self, patch_size: int, embed_dim: int):
        super().__init__()
        self.proj = nn.Conv2d(1, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x):  # [B, 1, T, F] -> [B, (T/p)*(F/p), D], time-major
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed_dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3)  # q, k, v stacked in this order
        self.proj = nn.Linear(dim, dim)

    def forward(self, x, attn_mask=None):  # [B, L, D]; mask [L, L] bool, True = may attend
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, d // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each [B, H, L, D/H]
        # Fused kernel (flash / memory-efficient on GPU, plain math on CPU).
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


def drop_path(x, drop_prob: float, training: bool):
    """Stochastic depth: drop the whole residual branch per sample."""
    if drop_prob == 0.0 or not training:
        return x
    keep = 1.0 - drop_prob
    mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
    return x * mask / keep


class Block(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, drop_path_rate: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path_rate = drop_path_rate

    def forward(self, x, attn_mask=None):
        x = x + drop_path(self.attn(self.norm1(x), attn_mask), self.drop_path_rate,
                          self.training)
        return x + drop_path(self.mlp(self.norm2(x)), self.drop_path_rate, self.training)


def sincos_pos_embed(embed_dim: int, grid_t: int, grid_f: int) -> torch.Tensor:
    """A 2-D sin-cos table [1, 1 + grid_t * grid_f, D] (row 0, for cls, is zero).

    Only used for freshly initialised encoders: a loaded encoder always takes the table
    stored in its file (AudioMAE's was built on a transposed grid; docs/audiomae_format.md,
    "Positional table").
    """
    if embed_dim % 4:
        raise ValueError(f"embed_dim {embed_dim} must be a multiple of 4 for sin-cos")

    def one_axis(n, dim):
        omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2))
        angles = torch.arange(n, dtype=torch.float64)[:, None] * omega[None]
        return torch.cat([angles.sin(), angles.cos()], dim=1)  # [n, dim]

    t = one_axis(grid_t, embed_dim // 2)[:, None, :].expand(grid_t, grid_f, -1)
    f = one_axis(grid_f, embed_dim // 2)[None, :, :].expand(grid_t, grid_f, -1)
    table = torch.cat([t, f], dim=-1).reshape(grid_t * grid_f, embed_dim)
    table = torch.cat([torch.zeros(1, embed_dim, dtype=torch.float64), table])
    return table.float()[None]


# --------------------------------------------------------------------------------------
# The encoder
# --------------------------------------------------------------------------------------


class AudioMAEEncoder(nn.Module):
    """AudioMAE's ViT encoder.

    ``encoder(x)``: normalised fbank [B, 1, T, F] -> tokens [B, 1 + N, D] after the final
    norm. ``encoder.embed(x)``: the pooled clip embedding [B, D].

    ``trainable_blocks`` (forward argument) implements the freezing schedule: only the
    top ``trainable_blocks`` blocks (and the final norm) run with autograd; the patch
    embedding, the lower blocks, the cls token and the positional table run under
    ``torch.no_grad()``, so they keep no activations and cost no backward pass.

    ``keep`` (forward argument, long [B, n_keep]): the patch tokens to run, as indices
    into the N patches, taken after positions are added; the cls token is always
    prepended. MAE's visible patches and fine-tuning's structured patch dropout are both
    such a filter.

    The encoder also names its parameter groups: ``units()`` (freezing units, bottom to
    top), ``parameter_units()`` (parameter name -> unit), ``frozen_units(n)`` and
    ``no_weight_decay()``; the optimizer tags read these, never parameter names.
    """

    def __init__(self, cfg: EncoderConfig, final_norm: str = "norm"):
        super().__init__()
        if final_norm not in ("norm", "fc_norm"):
            raise ValueError(f"final_norm must be 'norm' or 'fc_norm', got {final_norm!r}")
        for name in ("num_frames", "num_mel_bins"):
            if getattr(cfg, name) % cfg.patch_size:
                raise ValueError(
                    f"{name}={getattr(cfg, name)} is not a multiple of the patch size "
                    f"{cfg.patch_size}"
                )
        self.cfg = cfg
        self.final_norm = final_norm
        d = cfg.embed_dim
        self.patch_embed = PatchEmbed(cfg.patch_size, d)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        # Fixed, never trained: a buffer keeps it out of the optimizer entirely.
        self.register_buffer("pos_embed", sincos_pos_embed(d, *cfg.grid))
        rates = torch.linspace(0, cfg.drop_path_rate, cfg.depth).tolist()
        self.blocks = nn.ModuleList(
            Block(d, cfg.num_heads, cfg.mlp_ratio, rate) for rate in rates
        )
        # Pretrained AudioMAE files end in `norm`; fine-tuned ones in `fc_norm` applied
        # to the pooled embedding instead.
        if final_norm == "norm":
            self.norm = nn.LayerNorm(d, eps=LAYER_NORM_EPS)
        else:
            self.fc_norm = nn.LayerNorm(d, eps=LAYER_NORM_EPS)
        self._init_weights()

    def _init_weights(self):
        nn.init.normal_(self.cls_token, std=0.02)
        w = self.patch_embed.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @property
    def depth(self) -> int:
        return len(self.blocks)

    @property
    def embed_dim(self) -> int:
        return self.cfg.embed_dim

    def _check_input(self, x):
        if x.ndim != 4 or x.shape[1] != 1:
            raise ValueError(f"expected fbank batch [B, 1, T, F], got {tuple(x.shape)}")
        t, f = x.shape[-2:]
        if (t, f) != (self.cfg.num_frames, self.cfg.num_mel_bins):
            raise ValueError(
                f"input has {t} frames x {f} mel bins, the encoder was built for "
                f"{self.cfg.num_frames} x {self.cfg.num_mel_bins}; pad/crop the fbank "
                "or load the checkpoint with num_frames=..."
            )

    def _embed_patches(self, x, keep=None):
        """Patch tokens plus positions, filtered by ``keep``, cls (+ its position) first."""
        tokens = self.patch_embed(x) + self.pos_embed[:, 1:, :]
        if keep is not None:
            if keep.ndim != 2 or keep.shape[0] != x.shape[0]:
                raise ValueError(f"keep must be a [B, n_keep] index of the patches, got "
                                 f"{tuple(keep.shape)} for a batch of {x.shape[0]}")
            tokens = tokens.gather(1, keep[:, :, None].expand(-1, -1, tokens.shape[2]))
        cls = (self.cls_token + self.pos_embed[:, :1, :]).expand(x.shape[0], -1, -1)
        return torch.cat([cls, tokens], dim=1)

    def forward(self, x, trainable_blocks: Optional[int] = None,
                keep: Optional[torch.Tensor] = None, layer: Optional[int] = None,
                final_norm: bool = True):
        """[B, 1, T, F] -> [B, 1 + N, D] (1 + n_keep with ``keep``); see the class
        docstring for trainable_blocks and keep. ``layer`` / ``final_norm``: stop after
        that block, with or without the final ``norm`` (see ``features``)."""
        self._check_input(x)
        n_train = self.depth if trainable_blocks is None else int(trainable_blocks)
        if not 0 <= n_train <= self.depth:
            raise ValueError(f"trainable_blocks={n_train} outside [0, {self.depth}]")
        n_blocks = self.resolve_layer(layer)
        n_frozen = self.depth - n_train
        frozen_everything = trainable_blocks is not None
        with torch.set_grad_enabled(torch.is_grad_enabled() and not frozen_everything):
            h = self._embed_patches(x, keep)
        with torch.set_grad_enabled(torch.is_grad_enabled() and n_frozen == 0):
            for blk in self.blocks[:min(n_frozen, n_blocks)]:
                h = blk(h)
        for blk in self.blocks[n_frozen:n_blocks]:
            h = blk(h)
        if not (final_norm and self.final_norm == "norm"):
            return h
        with torch.set_grad_enabled(torch.is_grad_enabled() and n_train > 0):
            return self.norm(h)

    def pool(self, tokens, pooling: str = "mean"):
        """Pooled embedding [B, D] from tokens [B, 1 + N, D]."""
        if pooling == "mean":
            pooled = tokens[:, 1:, :].mean(dim=1)
        elif pooling == "cls":
            pooled = tokens[:, 0, :]
        else:
            raise ValueError(f"pooling must be 'mean' or 'cls', got {pooling!r}")
        return self.fc_norm(pooled) if self.final_norm == "fc_norm" else pooled

    def embed(self, x, pooling: str = "mean"):
        """Pooled clip embedding [B, D] of a normalised fbank batch [B, 1, T, F]."""
        return self.pool(self(x), pooling)

    # ----------------------------------------------------------------------------------
    # Readouts for evaluation: any block's tokens, with or without the final norm, and
    # mean pooling over the patches of real (not padded) frames. ``forward``/``embed``/
    # ``pool`` above are what training uses and stay as they are; with the default
    # arguments these methods compute exactly the same thing.
    # ----------------------------------------------------------------------------------

    def resolve_layer(self, layer: Optional[int] = None) -> int:
        """Number of blocks a readout runs: ``None`` = all (the last block's output);
        ``L`` in 1..depth = block L's output (1-based); ``-1`` = the last block, ``-2``
        the one before, ...; ``0`` = the patch embedding (with positions), no block."""
        if layer is None:
            return self.depth
        layer = int(layer)
        if not -self.depth <= layer <= self.depth:
            raise ValueError(f"layer {layer} outside [-{self.depth}, {self.depth}]: the "
                             f"encoder has {self.depth} blocks (1-based, or negative "
                             "from the end; 0 = the patch embedding)")
        return layer if layer >= 0 else self.depth + 1 + layer

    def features(self, x, layer: Optional[int] = None, final_norm: bool = True):
        """Tokens [B, 1 + N, D] of the output of block ``layer`` (see ``resolve_layer``).

        ``final_norm``: apply the encoder's final ``norm`` to those tokens (pretrained
        layout; for an intermediate block this is the last norm applied to an earlier
        output). Encoders with ``fc_norm`` (fine-tuned layout) normalise the pooled
        embedding instead, in ``pool_tokens``. ``features(x)`` equals ``forward(x)``.
        Gradients flow as usual (no freezing here).
        """
        return self(x, layer=layer, final_norm=final_norm)

    def patch_mask(self, valid_frames, num_frames: Optional[int] = None):
        """Bool [B, N]: True for the patches of real frames, time-major like the tokens.

        ``valid_frames`` [B]: real (not padded) frames per clip. A time patch counts as
        real when at least one of its frames is real (a partly real patch is real);
        patches whose frames are all padding are False. ``num_frames`` defaults to the
        encoder's input length.
        """
        p = self.cfg.patch_size
        t_patches = (num_frames or self.cfg.num_frames) // p
        f_patches = self.cfg.num_mel_bins // p
        valid = torch.as_tensor(valid_frames, device=self.cls_token.device).reshape(-1)
        starts = torch.arange(t_patches, device=valid.device) * p      # first frame of each
        real_t = starts[None, :] < valid[:, None]                      # [B, T/p]
        return real_t[:, :, None].expand(-1, -1, f_patches).reshape(valid.shape[0], -1)

    def pool_tokens(self, tokens, pooling: str = "mean", patch_mask=None,
                    final_norm: bool = True):
        """Pooled embedding [B, D] of tokens [B, 1 + N, D].

        ``patch_mask`` (bool [B, N], e.g. ``patch_mask(valid_frames)``): mean pooling
        over the True patches only (a clip without any True patch falls back to all
        patches); ignored for ``cls``. ``final_norm``: apply ``fc_norm`` to the pooled
        vector for fine-tuned-layout encoders (no effect on ``norm`` encoders, whose
        final norm belongs to ``features``). With the defaults this is ``pool``.
        """
        if pooling == "cls":
            pooled = tokens[:, 0, :]
        elif pooling == "mean":
            patches = tokens[:, 1:, :]
            if patch_mask is None:
                pooled = patches.mean(dim=1)
            else:
                mask = torch.as_tensor(patch_mask, device=tokens.device).bool()
                if mask.shape != patches.shape[:2]:
                    raise ValueError(f"patch_mask has shape {tuple(mask.shape)}, the "
                                     f"tokens have {tuple(patches.shape[:2])} patches")
                mask = mask | ~mask.any(dim=1, keepdim=True)  # nothing real: use all
                w = mask.to(patches.dtype)[:, :, None]
                pooled = (patches * w).sum(dim=1) / w.sum(dim=1)
        else:
            raise ValueError(f"pooling must be 'mean' or 'cls', got {pooling!r}")
        if final_norm and self.final_norm == "fc_norm":
            pooled = self.fc_norm(pooled)
        return pooled

    def readout(self, x, layer: Optional[int] = None, pooling: str = "mean",
                final_norm: bool = True, valid_frames=None):
        """Pooled clip embedding [B, D] under a readout: block ``layer``'s tokens, with
        or without the final norm, mean or cls pooling, and (``valid_frames`` given)
        mean pooling over the patches of real frames only. With the defaults this
        equals ``embed(x, pooling)``."""
        tokens = self.features(x, layer=layer, final_norm=final_norm)
        mask = None if valid_frames is None else self.patch_mask(valid_frames, x.shape[-2])
        return self.pool_tokens(tokens, pooling, mask, final_norm=final_norm)

    # ----------------------------------------------------------------------------------
    # Parameter groups: freezing units and weight decay (as timm's no_weight_decay).
    # ----------------------------------------------------------------------------------

    def units(self):
        """Freezing units, bottom to top: ``encoder.embed`` (patch embedding, cls
        token), ``block.0`` .. ``block.{depth-1}``, ``encoder.norm`` (``norm`` or
        ``fc_norm``). A unit's index is its layer id for layer-wise lr decay."""
        return ["encoder.embed", *(f"block.{i}" for i in range(self.depth)), "encoder.norm"]

    def parameter_units(self) -> Dict[str, str]:
        """Parameter name (as in ``named_parameters``) -> its unit (see ``units``)."""
        out = {"cls_token": "encoder.embed"}
        out.update((n, "encoder.embed") for n, _ in
                   self.patch_embed.named_parameters(prefix="patch_embed"))
        for i, blk in enumerate(self.blocks):
            out.update((n, f"block.{i}") for n, _ in
                       blk.named_parameters(prefix=f"blocks.{i}"))
        out.update((n, "encoder.norm") for n, _ in
                   self._final_norm_module().named_parameters(prefix=self.final_norm))
        return out

    def no_weight_decay(self):
        """Names of the parameters trained without weight decay: every bias, every
        LayerNorm's parameters and the cls token (``pos_embed`` is a fixed buffer)."""
        names = {"cls_token"}
        for prefix, m in self.named_modules():
            if isinstance(m, nn.LayerNorm):
                names.update(n for n, _ in m.named_parameters(prefix=prefix))
            elif isinstance(getattr(m, "bias", None), nn.Parameter):
                names.add(f"{prefix}.bias")
        return names

    def frozen_units(self, trainable_blocks: int):
        """Units that ``forward(x, trainable_blocks)`` runs without autograd: the
        embedding, the lower ``depth - trainable_blocks`` blocks, and the final norm
        when no block trains."""
        units = self.units()
        frozen = set(units[:1 + self.depth - trainable_blocks])
        if trainable_blocks == 0:
            frozen.add(units[-1])
        return frozen

    def frozen_parameters(self, trainable_blocks: int):
        """The parameters that ``forward(x, trainable_blocks)`` leaves without gradient."""
        frozen = self.frozen_units(trainable_blocks)
        params = dict(self.named_parameters())
        return [params[n] for n, unit in self.parameter_units().items() if unit in frozen]

    def _final_norm_module(self):
        return self.norm if self.final_norm == "norm" else self.fc_norm


# --------------------------------------------------------------------------------------
# Checkpoint files
# --------------------------------------------------------------------------------------

_ENCODER_PREFIXES = ("cls_token", "pos_embed", "patch_embed.", "blocks.", "norm.", "fc_norm.")


def read_checkpoint_file(path) -> dict:
    """torch.load with weights_only=True; AudioMAE files carry an argparse.Namespace."""
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path} does not exist") from None
    except Exception as e:  # pickle errors, unsafe globals, truncated zip
        raise CheckpointError(
            f"cannot read {path} as a PyTorch checkpoint ({type(e).__name__}: {e}). "
            "Only tensors, plain containers and argparse.Namespace are accepted "
            "(weights_only loading); a file that needs other classes is refused so that "
            "it cannot run code."
        ) from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a state dict")
    return obj


def extract_encoder_state(obj: dict, path="<state dict>") -> Dict[str, torch.Tensor]:
    """Find the encoder's state dict in an AudioMAE file, a bare state dict, or a
    fairseq checkpoint written by this plugin; strip wrappers' key prefixes."""
    if "model" in obj and isinstance(obj["model"], dict):
        state = obj["model"]
    elif "state_dict" in obj and isinstance(obj["state_dict"], dict):
        state = obj["state_dict"]
    else:
        state = obj
    # This plugin's fairseq model keeps the encoder under `encoder.`; DDP adds `module.`.
    for prefix in ("module.", "encoder."):
        if any(k.startswith(prefix + "blocks.") for k in state):
            state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    enc = {
        k: v for k, v in state.items()
        if isinstance(v, torch.Tensor) and k.startswith(_ENCODER_PREFIXES)
    }
    if "patch_embed.proj.weight" not in enc or "blocks.0.attn.qkv.weight" not in enc:
        raise CheckpointError(
            f"{path} does not look like an AudioMAE encoder: no "
            "'patch_embed.proj.weight' / 'blocks.0.attn.qkv.weight' keys "
            f"(first keys: {sorted(state)[:8]})"
        )
    return enc


def infer_config(state: Dict[str, torch.Tensor], path="<state dict>") -> EncoderConfig:
    """Encoder shape from the tensors: width, depth, patch size, grid, mlp ratio.

    The number of heads is not stored in any tensor shape; AudioMAE's sizes all use
    64-dimensional heads, which is what this assumes (override with num_heads=...).
    """
    w = state["patch_embed.proj.weight"]  # [D, 1, p, p]
    if w.ndim != 4 or w.shape[1] != 1 or w.shape[2] != w.shape[3]:
        raise CheckpointError(
            f"{path}: patch_embed.proj.weight has shape {tuple(w.shape)}, expected "
            "[D, 1, p, p] (single-channel spectrogram patches)"
        )
    d, p = w.shape[0], w.shape[2]
    depth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
    hidden = state["blocks.0.mlp.fc1.weight"].shape[0]
    n_tokens = state["pos_embed"].shape[1] if "pos_embed" in state else None
    num_mel_bins = 128
    if n_tokens is not None:
        freq_patches = num_mel_bins // p
        num_frames = (n_tokens - 1) // freq_patches * p
    else:
        num_frames = 1024
    return EncoderConfig(
        embed_dim=d, depth=depth, num_heads=max(1, d // 64), mlp_ratio=hidden / d,
        patch_size=p, num_frames=num_frames, num_mel_bins=num_mel_bins,
    )


def resize_pos_embed(table: torch.Tensor, grid_from, grid_to) -> torch.Tensor:
    """Fit a [1, 1 + Tf*Ff, D] table to another time grid.

    Fewer time patches: crop (positions keep their exact values). More: linear
    interpolation along time. The frequency grid must match.
    """
    (t0, f0), (t1, f1) = grid_from, grid_to
    if f0 != f1:
        raise CheckpointError(
            f"positional table has {f0} frequency patches, the encoder needs {f1}; "
            "the number of mel bins cannot change"
        )
    cls, patches = table[:, :1], table[:, 1:].reshape(1, t0, f0, -1)
    if t1 <= t0:
        patches = patches[:, :t1]
    else:
        d = patches.shape[-1]
        grid = patches.permute(0, 3, 1, 2)  # [1, D, T, F]
        grid = F.interpolate(grid, size=(t1, f1), mode="bilinear", align_corners=True)
        patches = grid.permute(0, 2, 3, 1).reshape(1, t1, f1, d)
    return torch.cat([cls, patches.reshape(1, t1 * f1, -1)], dim=1)


def encoder_from_state_dict(
    state: Dict[str, torch.Tensor],
    path="<state dict>",
    num_frames: Optional[int] = None,
    num_heads: Optional[int] = None,
    drop_path_rate: float = 0.0,
) -> AudioMAEEncoder:
    """Build an encoder of the right size from encoder tensors and load them strictly."""
    cfg = infer_config(state, path)
    stored_grid = cfg.grid
    if num_heads is not None:
        cfg.num_heads = num_heads
    if num_frames is not None:
        cfg.num_frames = num_frames
    cfg.drop_path_rate = drop_path_rate
    final_norm = "norm" if "norm.weight" in state or "fc_norm.weight" not in state else "fc_norm"
    encoder = AudioMAEEncoder(cfg, final_norm=final_norm)
    state = dict(state)
    if "pos_embed" in state and cfg.grid != stored_grid:
        logger.info(
            "%s: positional table resized from %d to %d time patches (%s)",
            path, stored_grid[0], cfg.grid[0],
            "cropped" if cfg.grid[0] < stored_grid[0] else "interpolated",
        )
        state["pos_embed"] = resize_pos_embed(state["pos_embed"], stored_grid, cfg.grid)
    expected = encoder.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    misshaped = sorted(
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in set(state) & set(expected) if state[k].shape != expected[k].shape
    )
    if missing or unexpected or misshaped:
        lines = [f"{path} does not match an AudioMAE encoder of the inferred size {cfg}:"]
        for title, items in (("missing", missing), ("unexpected", unexpected),
                             ("mis-shaped", misshaped)):
            if items:
                shown = ", ".join(items[:10]) + (" ..." if len(items) > 10 else "")
                lines.append(f"  {title} ({len(items)}): {shown}")
        raise CheckpointError("\n".join(lines))
    encoder.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    return encoder


def _stored_num_heads(obj: dict) -> Optional[int]:
    """Head count recorded by this plugin (save_audiomae, or a fairseq checkpoint's
    ``model.encoder_args``); official files do not record it."""
    saved = obj.get("uamix_encoder_config")
    if saved is None:
        model_cfg = (obj.get("cfg") or {}).get("model")
        args = model_cfg.get("encoder_args") if isinstance(model_cfg, dict) else None
        saved = args["config"] if args else None
    return int(saved["num_heads"]) if saved else None


def load_audiomae(
    path,
    num_frames: Optional[int] = None,
    num_heads: Optional[int] = None,
    drop_path_rate: float = 0.0,
) -> AudioMAEEncoder:
    """Read an AudioMAE encoder from an official pretrained or fine-tuned `.pth`, a bare
    state dict, or a checkpoint written by this plugin (fairseq or `save_audiomae`).

    Loading is safe (``weights_only=True``, allow-listing only ``argparse.Namespace``).
    The size is inferred from the tensors. ``num_frames`` other than the file's resizes
    the positional table along time (logged). Decoder and head entries are ignored.
    """
    obj = read_checkpoint_file(path)
    state = extract_encoder_state(obj, path)
    if num_heads is None:
        num_heads = _stored_num_heads(obj)
    return encoder_from_state_dict(
        state, path, num_frames=num_frames, num_heads=num_heads, drop_path_rate=drop_path_rate
    )


def encoder_args(encoder: AudioMAEEncoder) -> dict:
    """The encoder's shape, enough to rebuild it before its weights are loaded: what a
    fairseq model keeps in its config (``model.encoder_args``)."""
    return {"config": asdict(encoder.cfg), "final_norm": encoder.final_norm}


def encoder_for_model(checkpoint: str, saved_args: Optional[dict], field: str,
                      num_frames: Optional[int] = None, num_heads: Optional[int] = None,
                      drop_path_rate: float = 0.0):
    """The encoder a fairseq model starts from.

    ``saved_args`` (from ``encoder_args``) is the shape a checkpoint's model config
    carries: the model is being rebuilt from that checkpoint, its weights follow, and
    the encoder file ``checkpoint`` is not needed. Otherwise the encoder is read from
    ``checkpoint`` (an error naming ``field`` if it is empty).
    """
    if saved_args is not None:
        cfg = EncoderConfig(**{**saved_args["config"], "drop_path_rate": drop_path_rate})
        return AudioMAEEncoder(cfg, final_norm=saved_args["final_norm"])
    if not checkpoint:
        raise ValueError(f"{field} is empty: give the encoder file to start from "
                         f"(e.g. {field}=/path/pretrained.pth)")
    return load_audiomae(checkpoint, num_frames=num_frames, num_heads=num_heads,
                         drop_path_rate=drop_path_rate)


def save_audiomae(encoder: AudioMAEEncoder, path, extra: Optional[dict] = None,
                  decoder_state: Optional[Dict[str, torch.Tensor]] = None):
    """Write ``encoder`` in the official AudioMAE layout: ``{"model": state_dict, ...}``.

    AudioMAE's own fine-tuning code and timm ports read it (they ignore decoder keys
    being absent with strict=False, as they do for the official pretrained file). The
    file is written to a temporary name and renamed, so a crash never leaves a
    half-written checkpoint in place of a good one.
    """
    state = {k: v.detach().cpu().contiguous() for k, v in encoder.state_dict().items()}
    # An MAE decoder (official names: mask_token, decoder_*) rides along, as in AudioMAE's
    # pretrained files, so that pretraining can be continued from the exported file.
    for k, v in (decoder_state or {}).items():
        if k in state:
            raise ValueError(f"decoder entry {k!r} collides with an encoder entry")
        state[k] = v.detach().cpu().contiguous()
    payload = {"model": state, "uamix_encoder_config": asdict(encoder.cfg)}
    if extra:
        payload.update(extra)
    tmp = f"{path}.tmp"
    torch.save(payload, tmp)
    os.replace(tmp, path)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def vit_config(size: str, **overrides) -> EncoderConfig:
    """Named sizes: 'tiny' (192/12/3), 'small' (384/12/6), 'base' (768/12/12),
    'large' (1024/24/16); keyword overrides for anything else."""
    sizes = {
        "tiny": dict(embed_dim=192, depth=12, num_heads=3),
        "small": dict(embed_dim=384, depth=12, num_heads=6),
        "base": dict(embed_dim=768, depth=12, num_heads=12),
        "large": dict(embed_dim=1024, depth=24, num_heads=16),
    }
    if size not in sizes:
        raise ValueError(f"unknown size {size!r}; choose one of {sorted(sizes)}")
    return EncoderConfig(**{**sizes[size], **overrides})



def write_random_audiomae(path, cfg: EncoderConfig, seed: int = 0, with_decoder: bool = True):
    """Write a randomly initialised encoder as an official *pretrained* AudioMAE file:
    ``{"model": ..., "optimizer": ..., "epoch": ..., "args": argparse.Namespace}`` with
    a final ``norm``, plus (``with_decoder``) a few decoder entries that loaders must
    ignore. Used for the demo and the tests, since real weights cannot be downloaded
    here."""
    torch.manual_seed(seed)
    encoder = AudioMAEEncoder(cfg, final_norm="norm")
    state = dict(encoder.state_dict())
    if with_decoder:
        d = cfg.embed_dim
        state["mask_token"] = torch.zeros(1, 1, d)
        state["decoder_embed.weight"] = torch.randn(d // 2, d) * 0.02
        state["decoder_pred.weight"] = torch.randn(cfg.patch_size ** 2, d // 2) * 0.02
    args = argparse.Namespace(model="mae_vit_random", norm_pix_loss=True, seed=seed)
    payload = {"model": state, "optimizer": {}, "epoch": 0, "scaler": {}, "args": args}
    tmp = f"{path}.tmp"
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return encoder
