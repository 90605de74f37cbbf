"""The encoder's shape in the model's own config, ``model.encoder_args``, the way
fairseq's wav2vec2 fine-tuning model carries ``w2v_args``: after a model is built from
its encoder file, the task writes the shape into the model config it passed (the one
saved with every checkpoint); a model rebuilt from a checkpoint
(``load_model_ensemble_and_task``) reads the shape there instead of the file."""

from dataclasses import dataclass, field
from typing import Any, Optional

from fairseq.dataclass import FairseqDataclass
from omegaconf import OmegaConf


@dataclass
class EncoderArgsConfig(FairseqDataclass):
    """Base of the plugin's model configs."""

    encoder_args: Any = field(
        default=None,
        metadata={"help": "written by the plugin, leave it unset: the shape of the encoder "
                  "the model was built with ({config, final_norm}), saved in the "
                  "checkpoint's config so that the model rebuilds from the checkpoint "
                  "without its encoder file; unset = read the encoder file"},
    )


def saved_encoder_args(cfg) -> Optional[dict]:
    """``cfg.encoder_args`` as a plain dict, or None for a model built from its file."""
    args = getattr(cfg, "encoder_args", None)
    if args is None:
        return None
    return OmegaConf.to_container(args) if OmegaConf.is_config(args) else dict(args)
