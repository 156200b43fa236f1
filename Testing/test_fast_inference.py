"""The inference speed-ups give the answers of the plain code: oneDNN convolutions, chunked channels-last slices,
and a next step proposed once per state."""
import pytest
import torch
from torch.nn import functional as F

from itermask import Session
from itermask.bundle import ModelBundle
from itermask.networks import Conv2d, Conv3d
from itermask.reconstruction import VolumeReconstructor, iteration_noise


@pytest.mark.parametrize("conv_class, reference, shape", [(Conv3d, F.conv3d, (1, 8, 14, 12, 10)),
                                                          (Conv2d, F.conv2d, (3, 8, 24, 20))])
def test_the_onednn_convolution_is_pytorchs_convolution(conv_class, reference, shape):
    torch.manual_seed(0)
    conv, x = conv_class(8, 16, 3, padding=1), torch.randn(shape)
    expected = reference(x, conv.weight, conv.bias, padding=1)
    with torch.inference_mode():
        assert torch.allclose(conv(x), expected, atol=1e-5)
    trained = conv(x)  # with autograd, PyTorch's own path: training is unchanged
    assert trained.requires_grad and torch.allclose(trained, expected, atol=1e-5)


def test_chunked_channels_last_slices_reconstruct_like_one_batch(tiny_model, scan):
    image, affine, brain, _ = scan
    bundle = ModelBundle.load(tiny_model)
    prepared = Session(bundle, image, affine, brain, device="cpu").prepared
    noise = iteration_noise(prepared.image.shape, 0, 3)
    hidden = prepared.brain & (torch.rand(prepared.brain.shape, generator=torch.Generator().manual_seed(0)) > 0.5)
    reconstructor = VolumeReconstructor(bundle, prepared.image, prepared.brain, torch.device("cpu"))
    chunked = reconstructor(hidden, noise)
    with torch.inference_mode():  # every brain slice at once, in PyTorch's default layout
        rows = prepared.brain.any(dim=(1, 2))
        net = bundle.networks["masked"].to(memory_format=torch.contiguous_format)
        x = prepared.image[rows][:, None]
        one_batch = net(torch.cat([torch.where(hidden[rows][:, None], noise[rows][:, None], x), reconstructor.x_f],
                                  dim=1))[:, 0]
    assert reconstructor.chunk < int(rows.sum())  # the test covers several chunks
    # Rounding differs with the layout; a normalised intensity moves by at most 1e-3 (lesions stand out by units).
    difference = (chunked[rows] - one_batch).abs()
    assert difference.max() < 1e-3 and difference.mean() < 1e-5
    assert not chunked[~rows].any()


def test_the_next_step_is_proposed_once_per_state(tiny_model, scan):
    image, affine, brain, _ = scan
    session = Session(ModelBundle.load(tiny_model), image, affine, brain, device="cpu")
    asked = []
    propose = session.policy.propose
    session.policy.propose = lambda state: asked.append(state.position) or propose(state)
    session.step()
    assert not session.converged
    session.step()                          # converged and step ask once for the same state
    assert asked == [-1, 0]
    session.set_tau(session.tau * 2)        # a change of course asks again
    session.propose()
    session.back()
    session.propose()
    assert asked == [-1, 0, 1, 0]
