"""irlib.bench at tiny scale on the CPU: rows, ratio columns, FLOP counts checked against independent counts,
and the re-implemented released SPN step computing SPN's value."""
import math

import pytest
import torch

from irlib import bench, spn
from irlib.losses import VGGFeatures
from irlib.models.edsr import EDSR


def test_count_flops_of_one_conv_is_2_cin_cout_k2_hw():
    conv = torch.nn.Conv2d(3, 8, 3, padding=1)
    x = torch.rand(2, 3, 10, 12)
    assert bench.count_flops(conv, x) == 2 * 3 * 8 * 3 * 3 * 10 * 12 * 2
    fwd = 2 * 3 * 8 * 3 * 3 * 10 * 12 * 2
    assert bench.count_flops(lambda: conv(x).sum().backward()) == 2 * fwd  # + weight gradient (x needs none)


def test_peaks_table():
    assert bench.peak_tflops("NVIDIA H100 80GB HBM3", "bf16") == 989.0
    assert bench.peak_tflops("NVIDIA H200", "tf32") == 494.7
    assert math.isnan(bench.peak_tflops("cpu x2", "bf16"))


def test_release_spn_term_computes_the_same_value_as_spn_loss():
    torch.manual_seed(0)
    m = EDSR(2, 8, 1)
    cfg = spn.SPNConfig(steps=(1, 2), layers=("relu1_1", "relu2_1"), layer_weights=(0.4, 0.6))
    vgg = VGGFeatures("vgg19", cfg.layers, pretrained=False)
    ours, release = spn.SPNLoss(m, cfg, embed=vgg), bench.ReleaseSPNTerm(m, cfg, vgg)
    with torch.no_grad():
        for p in m.parameters():
            p.mul_(1.2)
    ours.after_step(m, 2)
    release.after_step(m, 2)    # both copies due: the same EMA update on both sides
    lq = torch.rand(2, 3, 12, 12)
    out = torch.rand(2, 3, 24, 24, requires_grad=True)
    a, b = ours(out, {"lq": lq}), release(out, {"lq": lq})
    assert float(a.detach()) > 0 and torch.allclose(a, b, rtol=1e-5)
    ga, = torch.autograd.grad(a, out)
    gb, = torch.autograd.grad(b, out)
    assert torch.allclose(ga, gb, rtol=1e-4, atol=1e-9)


@pytest.fixture(scope="module")
def table():
    from irlib.data import sample_images

    return bench.run(list(sample_images(64).values()), "cpu", "tiny", steps=2, warmup=0,
                     variants=("release", "irlib loop", "fused"))


def test_bench_rows_ratios_and_flops(table):
    df = table
    assert set(df.paper) == {"spn", "diffloss"}
    for col in ("s_per_step", "ratio_to_base", "ratio_to_release", "flops_per_step", "tflops", "mfu", "device",
                "torch", "date", "precision"):
        assert col in df.columns, col
    assert (df.flops_per_step > 0).all() and (df.s_per_step > 0).all() and (df.steps == 2).all()
    for _, g in df.groupby("paper"):
        assert g.ratio_to_base.iloc[0] == 1.0 and g.variant.iloc[0] in ("L1", "L2")
        assert (g[g.variant.str.contains("release")].ratio_to_release == 1.0).all()
    assert df.mfu.isna().all() and df.device.iloc[0].startswith("cpu") and df.torch.iloc[0] == torch.__version__


def test_bench_flops_differ_by_the_repeated_vgg_work(table):
    """The released step embeds (and back-propagates) the output once per negative: N-1 more VGG passes
    forward and backward than irlib's; the fused path back-propagates through the N negatives too."""
    s = table[table.paper == "spn"].set_index("variant").flops_per_step
    rel = s[[v for v in s.index if "release" in v][0]]
    loop, fused = s["L1 + SPN, irlib loop"], s["L1 + SPN, irlib fused embed"]
    vgg = VGGFeatures(pretrained=False)
    out = torch.rand(4, 3, 32, 32)              # the tiny EDSR x4 output: batch 4, 32 px
    f_vgg = bench.count_flops(vgg, out)         # backward w.r.t. the input costs the same as forward
    assert rel - loop == 3 * 2 * f_vgg
    assert fused - loop == 4 * f_vgg
