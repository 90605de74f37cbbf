"""The plugin model inside fairseq's distributed wrappers."""

from fairseq.models import BaseFairseqModel


def find_uamix_model(model):
    """The plugin model inside fairseq's DDP wrappers: in distributed training it is
    ModuleProxyWrapper -> (Legacy)DistributedDataParallel -> model, two ``.module``s."""
    while not isinstance(model, BaseFairseqModel) and hasattr(model, "module"):
        model = model.module
    return model
