"""Reading fairseq logging outputs, which every uamix criterion sums across ranks."""


def logged_total(logging_outputs, key) -> float:
    """Sum of ``key`` over the logging outputs (missing counts as 0)."""
    return sum(float(log.get(key, 0)) for log in logging_outputs)
