"""model.compile: the encoder's blocks compiled in place (uamix_fairseq.modules.compiling).

On CPU torch.compile needs a C++ compiler; where none is found the compiling tests skip
with the reason and the field must fail with a message naming it.
"""

import pytest
import torch

from uamix_fairseq.modules import compiling
from uamix_fairseq.modules.audiomae import AudioMAEEncoder, EncoderConfig

pytest.importorskip("fairseq")
from uamix_fairseq.models.uamix_audiomae import (  # noqa: E402
    UamixAudioMAEConfig,
    UamixAudioMAEModel,
)

FRAMES = 32
REASON = compiling.compile_unsupported_reason("cpu")


def _model(compile_on: bool):
    torch.manual_seed(0)
    encoder = AudioMAEEncoder(EncoderConfig(embed_dim=32, depth=4, num_heads=2,
                                            num_frames=FRAMES))
    cfg = UamixAudioMAEConfig(num_frames=FRAMES, freeze_schedule="[(0, 2)]",
                              proj_hidden_dim=32, pred_hidden_dim=32, proj_out_dim=16,
                              compile=compile_on)
    return UamixAudioMAEModel(cfg, encoder, queue_size=16).train()


def _train(model, steps=2):
    """A few updates of every parameter the current stage trains: SGD with weight decay,
    which moves any parameter that got a gradient, even a zero one. (Not Adam: it turns
    rounding noise in a near-zero gradient into a full learning-rate step, so eager and
    compiled runs would part by ~lr for reasons unrelated to compiling.)"""
    g = torch.Generator().manual_seed(5)
    views = [torch.randn(steps, 4, 1, FRAMES, 128, generator=g) for _ in range(3)]
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1,
                          weight_decay=0.05)
    outs = []
    for i in range(steps):
        opt.zero_grad(set_to_none=True)
        out = model(views[0][i], views[1][i], views[2][i])
        sum(v.square().mean() for k, v in out.items() if k[0] in "zp").backward()
        frozen_grads = [p.grad for p in model.freezing.frozen_parameters()]
        opt.step()
        outs.append({k: v.detach() for k, v in out.items()})
    return outs, frozen_grads


@pytest.mark.skipif(REASON is not None, reason=f"torch.compile unusable here: {REASON}")
def test_compiled_blocks_match_eager_and_keep_frozen_blocks_bit_identical():
    eager, compiled = _model(False), _model(True)
    before = {k: v.clone() for k, v in compiled.state_dict().items()}
    out_e, _ = _train(eager)
    out_c, frozen_grads = _train(compiled)
    assert compiled._compiled
    assert all(getattr(b, "_compiled_call_impl", None) is not None
               for b in compiled.encoder.blocks)
    # Same parameter names as without compile: checkpoints are interchangeable.
    assert list(compiled.state_dict()) == list(eager.state_dict())
    assert all(g is None for g in frozen_grads)
    after = compiled.state_dict()
    for k, v in before.items():
        if k.startswith(("encoder.blocks.0.", "encoder.blocks.1.", "encoder.patch_embed",
                         "encoder.cls_token", "encoder.pos_embed")):
            assert torch.equal(after[k], v), k  # bit-identical
    assert not torch.equal(after["encoder.blocks.3.mlp.fc1.weight"],
                           before["encoder.blocks.3.mlp.fc1.weight"])
    for step_e, step_c in zip(out_e, out_c):
        for k in step_e:
            torch.testing.assert_close(step_c[k], step_e[k], rtol=1e-4, atol=1e-4)
    for k, v in eager.state_dict().items():
        torch.testing.assert_close(after[k], v, rtol=1e-4, atol=1e-5, msg=k)


def test_default_is_off():
    model = _model(False)
    model(*(torch.randn(2, 1, FRAMES, 128) for _ in range(3)))
    assert not model._compiled
    assert all(getattr(b, "_compiled_call_impl", None) is None for b in model.encoder.blocks)


def test_unsupported_torch_fails_with_a_clear_message(monkeypatch):
    monkeypatch.setattr(torch._inductor.cpp_builder, "get_cpp_compiler",
                        lambda: (_ for _ in ()).throw(RuntimeError("no g++")))
    reason = compiling.compile_unsupported_reason("cpu")
    assert "C++ compiler" in reason
    model = _model(True)  # torch itself can compile: the device is checked on use
    with pytest.raises(ValueError, match=r"model.compile=true.*C\+\+ compiler.*"
                                         r"model.compile=false"):
        model(*(torch.randn(2, 1, FRAMES, 128) for _ in range(3)))
    monkeypatch.setattr(torch._dynamo, "is_dynamo_supported", lambda: False)
    with pytest.raises(ValueError, match="model.compile=true.*does not support this Python"):
        _model(True)
