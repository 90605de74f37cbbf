from . import uamix_audiomae  # noqa: F401
