from . import uamix_adamw  # noqa: F401  (registers the optimizer)
