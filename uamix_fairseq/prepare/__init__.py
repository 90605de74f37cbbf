"""Converters from the standard distributions of downstream datasets to fairseq
manifests with labels (``<split>.tsv`` + ``<split>.label``, lines in the same order).

Command line::

    python -m uamix_fairseq.prepare {folder,esc50,speechcommands,voxceleb1,audioset} SRC DEST [options]

Python::

    from uamix_fairseq.prepare import prepare_esc50
    summary = prepare_esc50("ESC-50-master", "manifests/esc50")

Every converter reads headers only (``soundfile.info``), never resamples, counts and
reports missing and unreadable files, refuses a result without clips
(:class:`PrepareError`, a ``ValueError``) and returns a JSON-ready summary.
"""

from .audioset import prepare_audioset
from .core import Clip, Preparation, PrepareError
from .esc50 import prepare_esc50
from .folder import prepare_folder, stratified_split
from .speechcommands import prepare_speechcommands
from .voxceleb1 import prepare_voxceleb1

__all__ = ["Clip", "Preparation", "PrepareError", "prepare_audioset", "prepare_esc50",
           "prepare_folder", "prepare_speechcommands", "prepare_voxceleb1", "stratified_split"]
