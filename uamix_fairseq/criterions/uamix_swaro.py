"""fairseq criterion `uamix_swaro`: SwARo adversarial contrastive tuning [R].

    L = L_swap + mix_weight * L_mix + adv_weight * L_adv

- L_swap (SwAV): codes q1, q2 of the two views by Sinkhorn-Knopp on the gathered global
  batch (plus SwAV's feature queue when enabled), identical on every rank; view 1 predicts
  q2 and view 2 predicts q1 from its prototype scores.
- L_mix (uaMix): the mixture of view 1 (T-CutMix, TF-CutMix or mixup, as in uamix_nnclr)
  predicts lam * q2_i + (1 - lam) * q2_partner(i): the lambda-mix of its two sources'
  swapped codes (the virtual labels of uamix_nnclr, with codes in place of neighbours).
- L_adv (SwARo): an adversarial copy of view 1 (or of the mixture, ``adv_on_mixture``)
  made by targeted PGD inside an L-infinity budget given in dB, pushing each clip's
  predicted assignment towards the clean target of another clip (a derangement of the
  global batch), predicts the clean target of its own clip. The attack runs with the
  model in eval mode (no BatchNorm statistics change, nothing is queued), through every
  encoder block (frozen ones included) but asks only for the input's gradient, so no
  parameter is trained by it.

Plain pieces: ``uamix_fairseq.modules.swaro`` (Sinkhorn, loss, derangement, attack),
``uamix_fairseq.modules.attacks`` (PGD, dB budget), ``uamix_fairseq.modules.mixing``; the mixing and its
random stream are uamix_nnclr's.
"""

from dataclasses import dataclass, field

import torch
from fairseq.criterions import register_criterion
from omegaconf import II

from ..modules.attacks import db_to_normalized
from ..models.wrappers import find_uamix_model
from ..modules.seeding import SHARED, step_generator
from ..modules.swaro import balanced_codes, derangement, swapped_prediction_loss, targeted_attack
from .base import BITS, GlobalBatch, MixingConfig, MixingCriterion


@dataclass
class UamixSwARoConfig(MixingConfig):
    temperature: float = field(
        default=0.1, metadata={"help": "[R] softmax temperature of the swapped prediction (SwAV)"})
    sinkhorn_iterations: int = field(
        default=3, metadata={"help": "[R] Sinkhorn-Knopp iterations (SwAV)"})
    sinkhorn_epsilon: float = field(
        default=0.05,
        metadata={"help": "[R] Sinkhorn entropy regularisation: smaller = harder codes (SwAV)"},
    )
    queue_start_update: int = field(
        default=0,
        metadata={"help": "[R] with model.queue_size > 0: the queued projections join the "
                  "Sinkhorn problem from this update on, once the queue is full (SwAV "
                  "starts it after 15 epochs)"},
    )
    adv_weight: float = field(
        default=1.0, metadata={"help": "[R] weight of L_adv; 0 = no attack (plain SwAV + mixing)"})
    adv_budget_db: float = field(
        default=2.0,
        metadata={"help": "[R] L-infinity attack budget: at most this many dB up or down "
                  "on every mel band of every frame (converted with task.norm_std; 2 dB "
                  "= 0.050 normalised units for AudioSet statistics)"},
    )
    adv_steps: int = field(default=3, metadata={"help": "[R] PGD steps of the attack"})
    adv_step_db: float = field(
        default=1.0, metadata={"help": "[R] PGD step size in dB (signed-gradient steps)"})
    adv_random_start: bool = field(
        default=True, metadata={"help": "[R] start PGD uniformly inside the budget"})
    adv_on_mixture: bool = field(
        default=False,
        metadata={"help": "[R] attack the mixture of view 1 (mixing before the attack; its "
                  "target is the lambda-mix of codes) instead of view 1 itself; needs "
                  "mix_mode != none and mix_weight > 0"},
    )
    norm_std: float = II("task.norm_std")


@register_criterion("uamix_swaro", dataclass=UamixSwARoConfig)
class UamixSwARoCriterion(MixingCriterion):
    # Swapped agreement: top prototype of view 1 == top code of view 2; adv_hit: top of
    # the adversarial view == top of its attack target (the attack's success), in %.
    METRICS = (("loss", "loss", BITS, 3), ("clean_loss", "clean_loss", BITS, 3),
               ("mix_loss", "mix_loss", BITS, 3), ("adv_loss", "adv_loss", BITS, 3),
               ("agreement", "agreement", 100.0, 2), ("adv_hit", "adv_hit", 100.0, 2),
               ("lam", "lam_x_n", 1.0, 3), ("queue_fill", "queue_fill_x_n", 1.0, 3),
               ("queue_used", "queue_used_x_n", 1.0, 3),
               ("trainable_blocks", "trainable_blocks_x_n", 1.0, 3))

    def __init__(self, cfg: UamixSwARoConfig, task):
        super().__init__(cfg, task)  # the mixing fields (criterions/base.py)
        checks = [
            ("temperature", cfg.temperature > 0, "> 0"),
            ("sinkhorn_iterations", cfg.sinkhorn_iterations >= 1, ">= 1"),
            ("sinkhorn_epsilon", cfg.sinkhorn_epsilon > 0, "> 0"),
            ("queue_start_update", cfg.queue_start_update >= 0, ">= 0"),
            ("adv_weight", cfg.adv_weight >= 0, ">= 0"),
            ("adv_budget_db", cfg.adv_budget_db >= 0, ">= 0"),
            ("adv_steps", cfg.adv_steps >= 0, ">= 0"),
            ("adv_step_db", cfg.adv_step_db >= 0, ">= 0"),
        ]
        for name, ok, rule in checks:
            if not ok:
                raise ValueError(f"criterion.{name} must be {rule}, got {getattr(cfg, name)}")
        if cfg.adv_on_mixture and (cfg.mix_mode == "none" or cfg.mix_weight == 0):
            raise ValueError("criterion.adv_on_mixture=true attacks the mixture, but mixing is "
                             "off (criterion.mix_mode=none or mix_weight=0): turn mixing on "
                             "or set adv_on_mixture=false")
        # Budget and step in the model's input units (normalised fbank).
        self.adv_eps = db_to_normalized(cfg.adv_budget_db, cfg.norm_std)
        self.adv_step = db_to_normalized(cfg.adv_step_db, cfg.norm_std)

    def _shared_generator(self):
        """A stream equal on every rank (the derangement of the global batch)."""
        return step_generator(self.cfg.seed, self.num_updates, "mixing", SHARED)

    # ---------------------------------------------------------------- pieces
    def _queue_scores(self, model):
        """Scores of SwAV's queue for the Sinkhorn problem: in training, from
        queue_start_update on, once the queue is full; otherwise None."""
        queue = model.support_queue
        if (queue is None or not model.training or queue.filled < queue.size
                or self.num_updates < self.cfg.queue_start_update):
            return None
        return model.queue_scores()

    def adversarial_view(self, model, x, targets, generator):
        """Targeted PGD on ``x`` towards ``targets`` with every module in eval mode;
        each module's mode is restored afterwards."""
        modes = [(m, m.training) for m in model.modules()]
        model.eval()
        try:
            return targeted_attack(model.attack_scores, x, targets, self.cfg.temperature,
                                   self.adv_eps, self.cfg.adv_steps, self.adv_step,
                                   self.cfg.adv_random_start, generator)
        finally:
            for m, mode in modes:
                m.training = mode

    # ---------------------------------------------------------------- loss
    def forward(self, model, sample, reduce=True):
        view1, view2 = sample["net_input"]["view1"], sample["net_input"]["view2"]
        gen = self._generator()
        mixed, lam, partner = self.mix(view1, gen)
        out = model(view1=view1, view2=view2, mixed=mixed)
        # The attack and the adversarial view run on the plugin model itself: a second
        # pass through a DDP wrapper before backward would confuse its bookkeeping; the
        # adversarial view's gradients flow into the same parameters all the same.
        inner = find_uamix_model(model)
        loss, logging_output = self.swaro_loss(inner, sample, out, mixed, lam, partner, gen)
        return loss, view1.shape[0], logging_output

    def swaro_loss(self, model, sample, out, mixed, lam, partner, gen):
        cfg = self.cfg
        view1 = sample["net_input"]["view1"]
        b, device = view1.shape[0], view1.device
        tau = cfg.temperature
        out = {k: v.float() for k, v in out.items()}  # losses in float32
        # Training: codes from the global batch (all ranks solve the same problem and
        # keep their own rows). Validation: local rows only.
        batch = GlobalBatch(sample, b, device, gather=model.training)
        real, real_all, rows = batch.real, batch.real_all, batch.local
        extra = self._queue_scores(model)

        def codes(scores):
            all_scores, _ = batch.rows(scores.detach())
            return balanced_codes(all_scores, cfg.sinkhorn_iterations, cfg.sinkhorn_epsilon,
                                  real_all, extra)[rows]

        q1, q2 = codes(out["s1"]), codes(out["s2"])
        clean = 0.5 * (swapped_prediction_loss(out["s1"], q2, tau)
                       + swapped_prediction_loss(out["s2"], q1, tau)).sum()
        loss = clean

        zero = torch.zeros((), device=device)
        mix_loss, mix_target = zero, None
        if lam is not None:
            w = lam.to(device=device, dtype=torch.float32)[:, None]
            mix_target = w * q2 + (1 - w) * q2[partner.to(device)]
            mix_loss = swapped_prediction_loss(out["sm"], mix_target, tau).sum()
            loss = loss + cfg.mix_weight * mix_loss

        adv_loss, adv_hits = zero, 0
        if cfg.adv_weight > 0:
            source, target = (mixed, mix_target) if cfg.adv_on_mixture else (view1, q2)
            # Every clip is pushed towards the clean target of another real clip of the
            # global batch; dummy rows keep their own (they are not trained on).
            targets_all, _ = batch.rows(target)
            real_idx = real_all.nonzero()[:, 0]
            if real_idx.numel() >= 2:
                perm = torch.arange(real_all.shape[0], device=device)
                perm[real_idx] = real_idx[derangement(real_idx.numel(),
                                                      self._shared_generator()).to(device)]
                attack_targets = targets_all[perm[rows]]
                x_adv = self.adversarial_view(model, source, attack_targets, gen)
                _, s_adv = model.scores(x_adv)
                s_adv = s_adv.float()
                adv_loss = swapped_prediction_loss(s_adv, target, tau).sum()
                loss = loss + cfg.adv_weight * adv_loss
                adv_hits = (s_adv.argmax(1) == attack_targets.argmax(1))[real].sum()

        queue = model.support_queue
        if model.training and queue is not None:
            z_all = batch.rows(torch.cat([out["z1"], out["z2"]]).detach())[0]
            ids = sample["id"].to(device)
            ids_all = batch.rows(torch.cat([ids, ids]))[0]
            keep = batch.rows(torch.cat([real, real]))[0]
            queue.push(z_all[keep], ids_all[keep])

        agreement = (out["s1"].argmax(1) == q2.argmax(1))[real].sum()
        logging_output = {
            "loss": loss.detach(),
            "clean_loss": clean.detach(),
            "mix_loss": mix_loss.detach(),
            "adv_loss": adv_loss.detach(),
            "ntokens": b,
            "nsentences": b,
            "sample_size": b,
            "agreement": float(agreement),
            "adv_hit": float(adv_hits),
            "lam_x_n": float(lam.sum()) if lam is not None else 0.0,
            "queue_fill_x_n": (queue.filled / queue.size * b) if queue is not None else 0.0,
            "queue_used_x_n": float(b if extra is not None else 0),
            "trainable_blocks_x_n": float(model.trainable_blocks * b),
        }
        return loss, logging_output
