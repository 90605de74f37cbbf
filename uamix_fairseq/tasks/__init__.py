from . import uamix_contrastive  # noqa: F401
