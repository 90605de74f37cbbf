"""Robust accuracy: the attacks of the few-shot and linear-probe commands.

What is attacked: the *query* clips of the few-shot episodes and the *test* clips of the
probe. Support and train clips stay clean, and the clean scores come from the usual
(cached) clean embeddings, so clean and robust accuracy are measured on the same
episodes / test clips and their difference is paired.

An attacked clip goes through, in this order:

1. noise (``snr_db``): white Gaussian noise at that signal-to-noise ratio, added to the
   waveform before the fbank (``attacks.add_noise_at_snr``), drawn from a generator
   seeded by (attack seed, clip index): the same noise for every encoder and batching.
2. PGD (``eps_db``): L-infinity PGD (``attacks.pgd_linf``) on the normalised fbank, with
   the budget given in dB of mel-band power (``attacks.db_to_normalized``), maximising
   the loss of a differentiable *surrogate* classifier on the crafting encoder's
   embedding. The crafting encoder is the evaluated encoder itself (white-box) or, with
   ``source``, a second encoder (transfer / black-box): the evaluated encoders then only
   embed the finished inputs, without gradient.

Surrogate classifiers (the loss PGD increases) [R]:

- few-shot: untargeted cross entropy of cosine logits / ``temperature`` to the class
  means of the crafting encoder's clean embeddings of *every* clip of the manifest
  (normalised before averaging, as ``ncm_predict``), all classes of the manifest, the
  attacked clip itself left out of its own class mean. Each query clip is attacked
  once, whatever the number of episodes and (N, k) settings it appears in, and the
  same perturbed clip is then classified in every episode by that episode's own
  classifier. This bounds the cost; an attack tailored to each episode's support set
  would be stronger but costs one attack per (episode, query) pair.
- probe, single-label: cross entropy of the fitted multinomial logistic regression
  (the probe's own classifier: white-box on encoder + probe); with ``--no-logreg``,
  the class-mean loss above over the train split's classes. The k-NN scores are
  computed on the same perturbed clips.
- probe, multi-label: binary cross entropy of the fitted one-vs-rest regressions.

Cost: an attacked clip costs ``steps`` forward+backward passes and one forward pass of
the crafting encoder (about ``3 * steps + 1`` times embedding it), per crafting encoder.
Nothing here imports fairseq (clips are read through ``embed``).
"""

import logging
import os
from dataclasses import asdict, dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from ..modules.attacks import add_noise_at_snr, db_to_normalized, pgd_linf
from . import EvaluationError

__all__ = ["AttackConfig", "ClassMeanLoss", "LogRegLoss", "attacked_embeddings",
           "attack_files", "clip_seed", "perturbed_inputs", "query_clips"]

# A surrogate loss: embeddings [B, D] (with gradient) and the attacked clips' indices
# [B] -> a scalar that PGD increases.
Loss = Callable[[torch.Tensor, np.ndarray], torch.Tensor]

NOISE_STREAM, START_STREAM = 0, 1

logger = logging.getLogger("uamix_fairseq.evaluation")


@dataclass
class AttackConfig:
    """The attack of one evaluation run (all budgets as the user gives them)."""

    eps_db: Optional[float] = None       # L-inf PGD budget in dB; None: no PGD
    steps: int = 10
    step_size_db: Optional[float] = None  # None: 2.5 * eps_db / steps (Madry et al.)
    random_start: bool = True
    snr_db: Optional[float] = None       # white noise at this SNR; None: no noise
    source: Optional[str] = None         # transfer: craft PGD on this encoder file
    seed: int = 0
    temperature: float = 0.1             # cosine logits of the class-mean loss [R]
    batch_size: int = 8

    def __post_init__(self):
        if self.eps_db is not None and self.eps_db < 0:
            raise EvaluationError(f"--attack-eps-db must be >= 0, got {self.eps_db}")
        if int(self.steps) != self.steps or self.steps < 0:
            raise EvaluationError(f"--attack-steps must be an integer >= 0, got {self.steps}")
        if self.step_size_db is not None and self.step_size_db < 0:
            raise EvaluationError(f"--attack-step-size-db must be >= 0, got {self.step_size_db}")
        if not self.temperature > 0:
            raise EvaluationError(f"--attack-temperature must be > 0, got {self.temperature}")
        if self.batch_size < 1:
            raise EvaluationError(f"--attack-batch-size must be >= 1, got {self.batch_size}")
        if self.source is not None and self.eps_db is None:
            raise EvaluationError("--attack-source crafts PGD on a second encoder, so it "
                                  "needs --attack-eps-db (the PGD budget)")

    @property
    def enabled(self) -> bool:
        return self.eps_db is not None or self.snr_db is not None

    @property
    def effective_step_size_db(self) -> float:
        if self.step_size_db is not None:
            return float(self.step_size_db)
        return 2.5 * float(self.eps_db or 0.0) / max(int(self.steps), 1)

    def budget(self, norm_std: float) -> Tuple[float, float]:
        """(eps, step size) in normalised fbank units."""
        return (db_to_normalized(self.eps_db or 0.0, norm_std),
                db_to_normalized(self.effective_step_size_db, norm_std))

    def describe(self) -> str:
        parts = []
        if self.snr_db is not None:
            parts.append(f"noise at {self.snr_db:g} dB SNR")
        if self.eps_db is not None:
            how = f"transfer from {self.source}" if self.source else "white-box"
            parts.append(f"PGD {self.eps_db:g} dB, {self.steps} steps of "
                         f"{self.effective_step_size_db:.3g} dB, {how}")
        return " + ".join(parts) or "none"

    def settings(self, num_attacked: int) -> Dict:
        out = asdict(self)
        out.update(step_size_db=self.effective_step_size_db if self.eps_db is not None
                   else None, num_attacked_clips=int(num_attacked),
                   description=self.describe())
        return out


def clip_seed(seed: int, stream: int, clip: int) -> int:
    """A 32-bit seed for one clip's random draws (independent streams per use)."""
    return int(np.random.SeedSequence([int(seed), int(stream), int(clip)])
               .generate_state(1)[0])


# ---------------------------------------------------------------------------
# surrogate losses
# ---------------------------------------------------------------------------


class ClassMeanLoss:
    """Untargeted cross entropy of ``cos(embedding, class mean) / temperature``.

    ``pool`` [N, D] clean embeddings with classes ``pool_labels`` [N] (0..C-1, or -1 for
    none) give the class means (of L2-normalised rows). ``labels`` [M] is the true class
    of every attackable clip index (-1: not attacked by the loss, e.g. a test class the
    train split lacks). With ``self_in_pool`` clip index i *is* pool row i and is left
    out of its own class mean (leave-one-out).
    """

    def __init__(self, pool, pool_labels, num_classes: int, labels, temperature: float = 0.1,
                 self_in_pool: bool = False, device="cpu"):
        pool = torch.as_tensor(np.asarray(pool, dtype=np.float32), device=device)
        self.pool = F.normalize(pool, dim=-1)
        pool_labels = torch.as_tensor(np.asarray(pool_labels, dtype=np.int64), device=device)
        keep = pool_labels >= 0
        self.sums = torch.zeros(num_classes, pool.shape[1], device=device).index_add_(
            0, pool_labels[keep], self.pool[keep])
        self.labels = torch.as_tensor(np.asarray(labels, dtype=np.int64), device=device)
        self.temperature = float(temperature)
        self.self_in_pool = self_in_pool

    def logits(self, emb: torch.Tensor, clips: np.ndarray) -> torch.Tensor:
        ids = torch.as_tensor(clips, device=emb.device)
        e = F.normalize(emb.float(), dim=-1)
        logits = e @ F.normalize(self.sums, dim=-1).T                          # [B, C]
        y = self.labels[ids]
        if self.self_in_pool:
            own = F.normalize(self.sums[y.clamp_min(0)] - self.pool[ids], dim=-1)
            logits = logits.scatter(1, y.clamp_min(0)[:, None], (e * own).sum(-1, keepdim=True))
        return logits / self.temperature

    def __call__(self, emb: torch.Tensor, clips: np.ndarray) -> torch.Tensor:
        y = self.labels[torch.as_tensor(clips, device=emb.device)]
        return F.cross_entropy(self.logits(emb, clips), y, ignore_index=-1, reduction="sum")


class LogRegLoss:
    """Cross entropy of a fitted ``LogRegModel`` (one model, ``E = 1``): multinomial with
    class ``labels`` [M] (-1: ignored), or, with ``multi_label``, the summed binary
    cross entropy of the one-vs-rest classes that were fitted, 0/1 ``labels`` [M, C]."""

    def __init__(self, model, labels, multi_label: bool = False, device="cpu"):
        def t(a):
            return torch.as_tensor(np.asarray(a, dtype=np.float32), device=device)

        self.mean, self.std = t(model.mean[0, 0]), t(model.std[0, 0])
        self.weight, self.bias = t(model.weight[0]), t(model.bias[0])
        self.multi_label = multi_label
        if multi_label:
            fitted = np.ones(self.bias.shape[0], dtype=bool) if model.constant is None \
                else np.isnan(model.constant)
            self.fitted = torch.as_tensor(fitted, device=device)
            self.labels = t(labels)
        else:
            self.labels = torch.as_tensor(np.asarray(labels, dtype=np.int64), device=device)

    def logits(self, emb: torch.Tensor) -> torch.Tensor:
        return ((emb.float() - self.mean) / self.std) @ self.weight + self.bias

    def __call__(self, emb: torch.Tensor, clips: np.ndarray) -> torch.Tensor:
        ids = torch.as_tensor(clips, device=emb.device)
        logits = self.logits(emb)
        if self.multi_label:
            return F.binary_cross_entropy_with_logits(
                logits[:, self.fitted], self.labels[ids][:, self.fitted], reduction="sum")
        return F.cross_entropy(logits, self.labels[ids], ignore_index=-1, reduction="sum")


# ---------------------------------------------------------------------------
# perturbing and embedding clips
# ---------------------------------------------------------------------------


def perturbed_inputs(clips: np.ndarray, waveform: torch.Tensor, lengths: torch.Tensor,
                     frontend, attack: AttackConfig, crafter=None,
                     pooling: str = "mean", readout=None) -> torch.Tensor:
    """Model inputs [B, 1, T, F] of one batch of clips after the attack.

    ``waveform`` [B, N] zero-padded (each clip's mean removed, as the dataset gives
    it), ``lengths`` [B], ``clips`` the clip indices [B] (they seed the noise and name
    the rows for the loss). ``crafter``: ``(encoder, loss)`` that PGD attacks, needed
    when ``attack.eps_db`` is set. The PGD random start is drawn from a generator
    seeded by (attack seed, first clip of the batch). ``readout`` (an ``EmbedConfig``)
    is the crafting encoder's readout (default: ``pooling`` of its ``embed``).
    """
    from ..tools.embed import pooled, real_frames
    from ..audio.frontend import batch_fbank, model_input

    wav = waveform
    if attack.snr_db is not None:
        wav = waveform.clone()
        for row, (clip, n) in enumerate(zip(clips.tolist(), lengths.tolist())):
            gen = torch.Generator().manual_seed(clip_seed(attack.seed, NOISE_STREAM, clip))
            wav[row:row + 1, :n] = add_noise_at_snr(waveform[row:row + 1, :n],
                                                    attack.snr_db, gen)
    fbank, _ = batch_fbank(wav, lengths, frontend)
    x = model_input(fbank, frontend)
    if attack.eps_db is None:
        return x
    if crafter is None:
        raise ValueError("a PGD attack needs a crafting (encoder, loss)")
    encoder, loss = crafter
    x = x.to(encoder.cls_token.dtype)
    eps, step = attack.budget(frontend.norm_std)
    gen = torch.Generator().manual_seed(clip_seed(attack.seed, START_STREAM, int(clips[0])))
    valid = real_frames(lengths, frontend).to(x.device)
    how = readout if readout is not None else pooling
    return pgd_linf(x, lambda v: loss(pooled(encoder, v, how, valid), clips), eps,
                    attack.steps, step, attack.random_start, gen)


def attacked_embeddings(batches, encoders: Sequence, frontend, attack: AttackConfig,
                        pooling: str = "mean", crafter=None, device="cpu",
                        readouts: Optional[Sequence] = None,
                        crafter_readout=None) -> List[np.ndarray]:
    """Embeddings [num clips, D_e] of the attacked clips by every encoder of ``encoders``
    (rows in the order ``batches`` yields them: ``(clips, waveform, lengths)``, see
    ``embed.iter_clip_batches``). ``crafter`` (encoder, loss) crafts the PGD inputs;
    the ``encoders`` only embed them, without gradient (for white-box, pass the same
    encoder in both). ``readouts`` (one ``EmbedConfig`` per encoder) and
    ``crafter_readout`` choose the readouts (default: ``pooling``)."""
    from ..tools.embed import embed_inputs, real_frames

    readouts = list(readouts) if readouts is not None else [pooling] * len(encoders)

    for enc in encoders:
        enc.to(device).eval()
    if crafter is not None:
        crafter[0].to(device).eval().requires_grad_(False)  # gradients only to inputs
    outs: List[List[np.ndarray]] = [[] for _ in encoders]
    for clips, wav, lengths in batches:
        x = perturbed_inputs(np.asarray(clips), wav.to(device), lengths, frontend, attack,
                             crafter, pooling, crafter_readout)
        valid = real_frames(lengths, frontend).to(x.device)
        for out, enc, how in zip(outs, encoders, readouts):
            out.append(embed_inputs(enc, x, how, valid))
    return [np.concatenate(o) if o else np.zeros((0, e.embed_dim), np.float32)
            for o, e in zip(outs, encoders)]


def _entry_key(path, cfg) -> Tuple[str, str]:
    """One (encoder file, settings) pair: the same file under two readouts is two."""
    return os.path.realpath(path), repr(sorted(asdict(cfg).items()))


def check_first_crop(cfgs) -> None:
    """Attacks perturb the first crop of each clip: refuse settings that embed more."""
    if any(c.windows != 1 for c in cfgs):
        raise EvaluationError("the attack options perturb the first crop of each clip: use "
                              "them with --windows 1 (and no windows= in --readout)")


def attack_files(paths: Sequence[str], manifest, clips: Sequence[int], cfg,
                 attack: AttackConfig, surrogate: Callable, device="cpu",
                 progress: bool = True, source_cfg=None) -> List[np.ndarray]:
    """Attacked embeddings [len(clips), D] of ``manifest``'s ``clips`` by every encoder
    file of ``paths``. ``cfg``: one ``EmbedConfig`` for all, or one per path (frame
    count, normalisation and readout). ``surrogate(path, cfg)`` builds the loss that
    PGD on the encoder at ``path`` under ``cfg`` increases. White-box: each distinct
    (file, settings) attacks itself. Noise only, or transfer (``attack.source``, under
    ``source_cfg``, default the first ``cfg``): the inputs are perturbed once per batch
    and embedded by every encoder, so all must share one input length and
    normalisation."""
    from ..tools.embed import clip_dataset, iter_clip_batches, load_encoder

    cfgs = list(cfg) if isinstance(cfg, (list, tuple)) else [cfg] * len(paths)
    if len(cfgs) != len(paths):
        raise ValueError(f"{len(cfgs)} settings for {len(paths)} encoder files")
    check_first_crop(cfgs + ([source_cfg] if source_cfg else []))
    entries: Dict[Tuple[str, str], Tuple[str, object]] = {}
    for p, c in zip(paths, cfgs):
        entries.setdefault(_entry_key(p, c), (p, c))

    def batches(c, desc):
        return iter_clip_batches(clip_dataset(manifest, c), clips, attack.batch_size,
                                 progress, desc)

    done: Dict[Tuple[str, str], np.ndarray] = {}
    if attack.eps_db is None or attack.source:
        inputs = {(c.num_frames, c.norm, c.sample_rate, c.resample)
                  for _, c in entries.values()}
        if len(inputs) > 1:
            raise EvaluationError(
                "noise and transfer attacks perturb each clip once for all encoders, so "
                "the encoders must see the same input; they differ in frame count or "
                "normalisation here: give --num-frames")
        first = next(iter(entries.values()))[1]
        crafter, crafter_readout = None, None
        if attack.source:
            crafter_readout = source_cfg or first
            logger.info("crafting PGD on %s (%s) for %d clips of %s", attack.source,
                     attack.describe(), len(clips), manifest)
            crafter = (load_encoder(attack.source, crafter_readout),
                       surrogate(attack.source, crafter_readout))
        loaded: Dict[Tuple[str, int], object] = {}
        encoders = []
        for p, c in entries.values():
            k = (os.path.realpath(p), c.num_frames)
            if k not in loaded:
                loaded[k] = load_encoder(p, c)
            encoders.append(loaded[k])
        embs = attacked_embeddings(batches(first, "attacking"), encoders, first.frontend(),
                                   attack, first.pooling, crafter, device,
                                   readouts=[c for _, c in entries.values()],
                                   crafter_readout=crafter_readout)
        done = dict(zip(entries, embs))
    else:
        for key, (p, c) in entries.items():
            logger.info("white-box attack (%s) of %d clips of %s on %s", attack.describe(),
                     len(clips), manifest, p)
            enc = load_encoder(p, c)
            (done[key],) = attacked_embeddings(
                batches(c, f"attacking with {os.path.basename(p)}"), [enc], c.frontend(),
                attack, c.pooling, (enc, surrogate(p, c)), device, readouts=[c],
                crafter_readout=c)
    out = [done[_entry_key(p, c)] for p, c in zip(paths, cfgs)]
    for p, emb in zip(paths, out):
        if not np.isfinite(emb).all():
            raise EvaluationError(f"{p}: the embeddings of the attacked clips contain NaN "
                                  "or inf")
    return out


def query_clips(plan) -> np.ndarray:
    """Sorted distinct clip indices that are a query in some episode of ``plan``."""
    return np.unique(np.concatenate([e.query for episodes in plan.values()
                                     for e in episodes]))
