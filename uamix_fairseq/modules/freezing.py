"""Freezing, decided in one place (docs/method.md, "Progressive retraining") [R].

A schedule is a list of ``(update, trainable_top_blocks)`` pairs, sorted by update:
from update ``u`` on, the top ``k`` encoder blocks (and the final norm when k > 0) train
and everything below stays frozen. The default ``[(0, 0), (2000, 6)]`` is MAE-CT's:
head warm-up with the whole encoder frozen, then the top half of a 12-block encoder.

Every plugin model owns one ``FreezeSchedule`` (``model.freezing``), and it is the only
thing that decides what trains:

- the model follows the update count with ``freezing.set_num_updates(n)``;
- the model runs its encoder with ``freezing.encoder_kwargs()``: the frozen prefix then
  runs under ``torch.no_grad()`` (no activations kept, no backward pass);
- the task's optimizer step (``optim/uamix_adamw.step_with_freezing``) asks
  ``freezing.frozen_units()`` / ``frozen_parameters()`` and gives those groups lr 0.

Models that train everything (MAE pretraining, the naive joint baseline, plain
fine-tuning) own ``FreezeSchedule.everything(encoder)``, which says so: nothing frozen,
the patch embedding and cls token trained too.
"""

import ast
import logging
from typing import List, Sequence, Tuple, Union

logger = logging.getLogger(__name__)

Schedule = List[Tuple[int, int]]


class ScheduleError(ValueError):
    pass


def parse_schedule(spec: Union[str, Sequence], depth: int, field: str = "freeze_schedule") -> Schedule:
    """Parse and validate a schedule given as a string like "[(0, 0), (2000, 6)]"
    (the yaml form) or as a sequence of pairs.

    Errors name ``field`` and say what is wrong: not a list of pairs, updates not
    strictly increasing, first stage not at update 0, block counts outside [0, depth].
    """
    if isinstance(spec, str):
        try:
            spec = ast.literal_eval(spec)
        except (ValueError, SyntaxError) as e:
            raise ScheduleError(
                f"{field}={spec!r} is not a list of (update, trainable_blocks) pairs, "
                f"e.g. '[(0, 0), (2000, 6)]' ({e})"
            ) from None
    try:
        stages = [(int(u), int(k)) for u, k in spec]
    except (TypeError, ValueError):
        raise ScheduleError(
            f"{field}={spec!r} must be a list of (update, trainable_blocks) pairs, "
            "e.g. [(0, 0), (2000, 6)]"
        ) from None
    if not stages:
        raise ScheduleError(f"{field} is empty; give at least one stage, e.g. [(0, 6)]")
    if stages[0][0] != 0:
        raise ScheduleError(f"{field} must start at update 0, got {stages}")
    for (u0, _), (u1, _) in zip(stages, stages[1:]):
        if u1 <= u0:
            raise ScheduleError(f"{field} updates must strictly increase, got {stages}")
    for u, k in stages:
        if not 0 <= k <= depth:
            raise ScheduleError(
                f"{field} asks for {k} trainable blocks at update {u}, but the encoder "
                f"has {depth} blocks; use a number between 0 and {depth}"
            )
    return stages


def trainable_blocks_at(schedule: Schedule, num_updates: int) -> int:
    """Number of trainable top blocks in force at ``num_updates``."""
    current = schedule[0][1]
    for update, blocks in schedule:
        if num_updates >= update:
            current = blocks
        else:
            break
    return current


class FreezeSchedule:
    """Which encoder units train at the current update.

    ``stages``: a parsed schedule (``parse_schedule``); ``None`` = everything trains,
    the patch embedding and cls token included (``FreezeSchedule.everything``). With a
    schedule the patch embedding and cls token never train; their parameters are kept
    out of the optimizer altogether (``requires_grad`` false: no optimizer state).

    The encoder is held as a plain reference (not a submodule), for its unit names.
    """

    def __init__(self, encoder, stages: Schedule = None):
        self.encoder = encoder
        self.stages = stages
        self.trainable_blocks = encoder.depth if stages is None else stages[0][1]
        if stages is not None:
            for p in (encoder.cls_token, *encoder.patch_embed.parameters()):
                p.requires_grad_(False)

    @classmethod
    def parse(cls, encoder, spec: Union[str, Sequence], field: str = "freeze_schedule"):
        """The schedule ``spec`` (yaml string or pairs) for ``encoder``; errors name ``field``."""
        return cls(encoder, parse_schedule(spec, encoder.depth, field=field))

    @classmethod
    def everything(cls, encoder):
        """Nothing frozen at any update."""
        return cls(encoder, None)

    @property
    def trains_everything(self) -> bool:
        return self.stages is None

    def set_num_updates(self, num_updates: int):
        """Follow the update count (fairseq calls the model's set_num_updates before
        every step and on resume); logs each change of stage."""
        if self.stages is None:
            return
        stage = trainable_blocks_at(self.stages, num_updates)
        if stage != self.trainable_blocks:
            logger.info("update %d: %d trainable encoder blocks (was %d)", num_updates,
                        stage, self.trainable_blocks)
        self.trainable_blocks = stage

    def encoder_kwargs(self):
        """Arguments of ``encoder(x, ...)`` that run the frozen prefix without autograd."""
        return {} if self.stages is None else {"trainable_blocks": self.trainable_blocks}

    def frozen_units(self):
        """Encoder units (``encoder.units()``) that must not change now."""
        if self.stages is None:
            return set()
        return self.encoder.frozen_units(self.trainable_blocks)

    def frozen_parameters(self):
        """The parameters of ``frozen_units()``."""
        if self.stages is None:
            return []
        return self.encoder.frozen_parameters(self.trainable_blocks)
