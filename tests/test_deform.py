"""The CPU kernel of the modulated deformable conv (AirNet's DGM) against torchvision's operator: values and every
gradient in float64 for random, zero and integer offsets, strides and dilations; the speed-up is printed, never
asserted."""
import time

import pytest
import torch
from torchvision.ops import deform_conv2d

from irlib.models.deform import modulated_deform_conv2d


def _inputs(offsets: str, stride: int, dilation: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 5, 11, 13, generator=g, dtype=torch.float64)
    w = torch.randn(4, 5, 3, 3, generator=g, dtype=torch.float64)
    bias = torch.randn(4, generator=g, dtype=torch.float64)
    ho = (11 + 2 - dilation * 2 - 1) // stride + 1
    wo = (13 + 2 - dilation * 2 - 1) // stride + 1
    shape = (2, 18, ho, wo)
    off = {"random": torch.randn(shape, generator=g, dtype=torch.float64) * 3,
           "zero": torch.zeros(shape, dtype=torch.float64),
           "integer": torch.randint(-3, 4, shape, generator=g).double()}[offsets]
    mask = torch.rand(2, 9, ho, wo, generator=g, dtype=torch.float64)
    return [t.requires_grad_() for t in (x, off, w, bias, mask)]


@pytest.mark.parametrize("offsets", ["random", "zero", "integer"])
@pytest.mark.parametrize("stride,dilation", [(1, 1), (2, 1), (1, 2)])
def test_gather_kernel_equals_torchvision_in_values_and_gradients(offsets, stride, dilation):
    x, off, w, bias, mask = _inputs(offsets, stride, dilation)
    kw = dict(stride=stride, padding=1, dilation=dilation)
    ref = deform_conv2d(x, off, w, bias, mask=mask, **kw)
    out = modulated_deform_conv2d(x, off, w, bias, mask=mask, impl="gather", **kw)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)
    up = torch.randn_like(ref)
    for a, b, name in zip(torch.autograd.grad(ref, (x, off, w, bias, mask), up),
                          torch.autograd.grad(out, (x, off, w, bias, mask), up), ("x", "offset", "weight", "bias", "mask")):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-11, msg=f"gradient of {name} ({offsets} offsets)")


@pytest.mark.parametrize("offsets", ["random", "zero", "integer"])
def test_grid_sample_kernel_equals_torchvision_in_values(offsets):
    x, off, w, bias, mask = _inputs(offsets, 1, 1, seed=3)
    with torch.no_grad():
        ref = deform_conv2d(x, off, w, bias, padding=1, mask=mask)
        torch.testing.assert_close(modulated_deform_conv2d(x, off, w, bias, padding=1, mask=mask), ref,
                                   rtol=0, atol=1e-11)   # auto without gradients: the grid_sample path
        torch.testing.assert_close(modulated_deform_conv2d(x, off, w, bias, padding=1, mask=mask,
                                                           impl="grid_sample"), ref, rtol=0, atol=1e-11)


def test_auto_picks_the_gradient_path_in_training_and_a_wrong_impl_is_refused():
    x, off, w, bias, mask = _inputs("random", 1, 1)
    out = modulated_deform_conv2d(x, off, w, bias, padding=1, mask=mask)
    assert out.requires_grad
    ref = deform_conv2d(x, off, w, bias, padding=1, mask=mask)
    g = torch.autograd.grad(out.sum(), off)[0]
    torch.testing.assert_close(g, torch.autograd.grad(ref.sum(), off)[0], rtol=0, atol=1e-11)
    with pytest.raises(ValueError, match="impl must be one of"):
        modulated_deform_conv2d(x, off, w, bias, padding=1, mask=mask, impl="mmcv")


def test_airnet_dcn_layer_is_the_same_function_on_either_kernel():
    from irlib.models.airnet import DCNLayer

    torch.manual_seed(0)
    layer = DCNLayer(6, 6).double()
    torch.nn.init.normal_(layer.conv_offset_mask.weight, std=0.3)   # non-zero offsets, as after training
    x, inter = torch.randn(1, 6, 10, 12, dtype=torch.float64), torch.randn(1, 6, 10, 12, dtype=torch.float64)
    outs, grads = [], []
    for impl in ("torchvision", "auto"):
        layer.impl = impl
        layer.zero_grad()
        y = layer(x, inter)
        y.square().sum().backward()
        outs.append(y.detach())
        grads.append(layer.conv_offset_mask.weight.grad.clone())
    torch.testing.assert_close(outs[1], outs[0], rtol=0, atol=1e-11)
    torch.testing.assert_close(grads[1], grads[0], rtol=0, atol=1e-10)


def test_report_cpu_speedup(capsys):
    """AirNet's layer size at a 96-pixel test image, one thread: the ratio is reported, not asserted."""
    torch.manual_seed(0)
    x, off = torch.randn(1, 64, 96, 96), torch.randn(1, 18, 96, 96)
    w, mask = torch.randn(64, 64, 3, 3), torch.rand(1, 9, 96, 96)
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        def timed(fn, grad):
            xx, oo = x.clone().requires_grad_(grad), off.clone().requires_grad_(grad)
            t = time.perf_counter()
            y = fn(xx, oo, w, None, padding=1, mask=mask)
            if grad:
                y.sum().backward()
            return time.perf_counter() - t
        tv_f, me_f = timed(deform_conv2d, False), timed(modulated_deform_conv2d, False)
        tv_b, me_b = timed(deform_conv2d, True), timed(modulated_deform_conv2d, True)
    finally:
        torch.set_num_threads(prev)
    with capsys.disabled():
        print(f"\ndeformable conv 64ch 96x96 on 1 CPU thread: forward x{tv_f / me_f:.1f}, forward+backward "
              f"x{tv_b / me_b:.1f} faster than torchvision")


def test_training_keeps_only_the_inputs_for_backward():
    """Memory as torchvision's kernel: autograd keeps the layer's inputs, not the kh*kw-times larger sampled
    columns and their products (AirNet's 50 layers held ~10 GB at a rehearsal batch before the recompute)."""
    from irlib.models.deform import _conv

    x, off, w, bias, mask = _inputs("random", 1, 1)

    def saved_bytes(fn) -> int:
        saved = []

        def keep(t):
            saved.append(t.numel() * t.element_size())
            return t

        with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
            fn()
        return sum(saved)

    inputs = sum(t.numel() * t.element_size() for t in (x, off, w, bias, mask))
    kept = saved_bytes(lambda: modulated_deform_conv2d(x, off, w, bias, padding=1, mask=mask, impl="gather"))
    plain = saved_bytes(lambda: _conv(x, off, w, bias, mask, 1, 1, 1, "gather"))
    assert kept <= inputs and plain > 5 * inputs, (kept, inputs, plain)
