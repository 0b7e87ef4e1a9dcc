"""Contrast normalisation (zfrepro.lrn): the forward is F.local_response_norm bit for bit, the
hand-written backward is autograd's gradient of it (and passes gradcheck), in any memory format."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from zfrepro.lrn import CrossChannelLRN, local_response_norm
from zfrepro.models import zfnet


@pytest.mark.parametrize("shape", [(2, 7, 3, 3), (3, 2, 5), (2, 1, 4, 4), (2, 9, 2, 3, 2)])
@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 6, 11])
def test_matches_torch_forward_and_backward(shape, size):
    torch.manual_seed(size)
    x = (torch.randn(*shape, dtype=torch.float64) * 3).requires_grad_()
    args = (size, 0.5, 0.75, 2.0)  # a large alpha, so the window sum matters
    ours, ref = local_response_norm(x, *args), F.local_response_norm(x, *args)
    assert torch.equal(ours, ref)
    g = torch.randn_like(ref)
    (g_ours,), (g_ref,) = torch.autograd.grad(ours, x, g), torch.autograd.grad(ref, x, g)
    torch.testing.assert_close(g_ours, g_ref, rtol=1e-10, atol=1e-12)
    assert torch.autograd.gradcheck(lambda z: local_response_norm(z, *args), (x.detach().clone().requires_grad_(),))


def test_module_is_a_local_response_norm_and_bit_identical_in_float32_channels_last():
    torch.manual_seed(0)
    x = torch.randn(4, 48, 20, 20) * 5
    m = CrossChannelLRN(5, 1e-4, 0.75, 2.0)
    assert isinstance(m, nn.LocalResponseNorm)
    ref = F.local_response_norm(x, 5, 1e-4, 0.75, 2.0)
    assert torch.equal(m(x), ref)
    assert torch.equal(m(x.contiguous(memory_format=torch.channels_last)), ref)
    xg = x.clone().requires_grad_()
    xr = x.clone().requires_grad_()
    m(xg).square().sum().backward()
    F.local_response_norm(xr, 5, 1e-4, 0.75, 2.0).square().sum().backward()
    torch.testing.assert_close(xg.grad, xr.grad, rtol=1e-5, atol=1e-7)


def test_networks_use_it_and_refuse_bad_input():
    net = zfnet(num_classes=3, input_size=64, width=0.25, fc_width=16)
    norms = [m for m in net.modules() if isinstance(m, nn.LocalResponseNorm)]
    assert len(norms) == 2 and all(type(m) is CrossChannelLRN for m in norms)
    with pytest.raises(ValueError, match="3 or more dimensions"):
        local_response_norm(torch.ones(2, 3), 5)
