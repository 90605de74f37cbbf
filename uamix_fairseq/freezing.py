"""The progressive unfreezing schedule (docs/method.md, "Progressive retraining") [R].

A schedule is a list of ``(update, trainable_top_blocks)`` pairs, sorted by update:
from update ``u`` on, the top ``k`` encoder blocks (and the final norm when k > 0) train
and everything below stays frozen. The default ``[(0, 0), (2000, 6)]`` is MAE-CT's:
head warm-up with the whole encoder frozen, then the top half of a 12-block encoder.
"""

import ast
from typing import List, Sequence, Tuple, Union

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
