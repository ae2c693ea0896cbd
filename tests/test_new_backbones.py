"""DiffLoss Table 1 baselines built from their releases: MB-TaylorFormer, FSDGN, RCD-Net, DeepLPF.

Key fixtures (``tests/fixtures/release/<name>.json``) and output fixtures (``<name>.pt``) were generated once
from each release's own model definition (see the ``source`` field); irlib's networks must have the same
parameter names and shapes and, filled with the same deterministic values, give the same outputs."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from release_fixtures import (
    FIXTURES,
    fill,
    load_keys,
    state_shapes,
)

from irlib.models import count_params
from irlib.models.deeplpf import DeepLPF
from irlib.models.fsdgn import FSDGN, FourierBlock
from irlib.models.rcdnet import RCDNet, load_rain_kernels, rain_kernels
from irlib.models.taylorformer import DeformEmbed, TaylorAttention, TaylorFormer

BUILDERS = {
    "taylorformer_b": TaylorFormer.b,
    "taylorformer_l": TaylorFormer.l,
    "taylorformer_tiny": TaylorFormer.tiny,
    "fsdgn": FSDGN,
    "rcdnet": lambda: RCDNet(tied=False),
    "rcdnet_tiny": lambda: RCDNet(stages=3, num_m=32, num_z=8, tied=False),
    "deeplpf": DeepLPF,
}


def _on_meta(build):
    with torch.device("meta"):
        return build()


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_release_keys_shapes_and_count(name):
    fx = load_keys(name)
    params, buffers = state_shapes(_on_meta(BUILDERS[name]))
    assert params == fx["params"]
    assert buffers == fx["buffers"]
    assert sum(math.prod(s) for s in params.values()) == fx["param_count"]


def test_published_parameter_counts():
    # MB-TaylorFormer paper: B 2.68M, L 7.43M; FSDGN paper: 2.73M.
    assert round(count_params(_on_meta(TaylorFormer.b)) / 1e6, 2) == 2.68
    assert round(count_params(_on_meta(TaylorFormer.l)) / 1e6, 2) == 7.43
    assert round(count_params(_on_meta(FSDGN)) / 1e6, 2) == 2.73


def _check_output(model, name, fwd=None, seed=None):
    fx = torch.load(FIXTURES / f"{name}.pt")
    fill(model, fx["seed"] if seed is None else seed).eval()
    with torch.no_grad():
        out = (fwd or model)(fx["input"])
    return out, fx


def test_taylorformer_output_matches_release():
    out, fx = _check_output(TaylorFormer.tiny(), "taylorformer_tiny")
    torch.testing.assert_close(out, fx["output"], atol=1e-5, rtol=0)


def test_fsdgn_outputs_match_release():
    m = FSDGN()
    out, fx = _check_output(m, "fsdgn", fwd=lambda x: torch.stack(m.forward_stages(x)))
    torch.testing.assert_close(out, fx["output"], atol=1e-5, rtol=0)
    torch.testing.assert_close(m(fx["input"]), fx["output"][0], atol=1e-5, rtol=0)


def test_rcdnet_outputs_match_release():
    m = RCDNet(stages=3, num_m=32, num_z=8, tied=False)

    def fwd(x):
        b0, bs, cms = m.forward_stages(x)
        return torch.stack([bs[-1], b0, cms[-1]])

    out, fx = _check_output(m, "rcdnet_tiny", fwd=fwd)
    torch.testing.assert_close(out, fx["output"], atol=1e-5, rtol=0)


def test_deeplpf_outputs_match_release_with_its_ellipse_typo():
    fx = torch.load(FIXTURES / "deeplpf.pt")
    m = DeepLPF(ellipse_b3_typo=True)
    for seed, expected in zip(fx["seed"], fx["output"]):
        fill(m, seed).eval()
        with torch.no_grad():
            torch.testing.assert_close(m(fx["input"]), expected, atol=1e-5, rtol=0)


def test_deeplpf_typo_option_only_swaps_one_semi_axis():
    fx = torch.load(FIXTURES / "deeplpf.pt")
    paper, release = fill(DeepLPF(), 0).eval(), fill(DeepLPF(ellipse_b3_typo=True), 0).eval()
    with torch.no_grad():
        assert (paper(fx["input"]) - release(fx["input"])).abs().max() > 1e-4
        for m in (paper, release):  # give ellipse 2 and 3 the same minor semi-axis: the variants must agree
            fc = m.deeplpfnet.elliptical_filter.fc_elliptical
            fc.weight[11] = fc.weight[10]
            fc.bias[11] = fc.bias[10]
        torch.testing.assert_close(paper(fx["input"]), release(fx["input"]), atol=0, rtol=0)


def test_deeplpf_filters_each_sample_of_a_batch_with_its_own_parameters():
    m = fill(DeepLPF.tiny(), 3).eval()
    x = torch.rand(2, 3, 32, 36, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        both = m(x)
        torch.testing.assert_close(both[0:1], m(x[0:1]), atol=1e-6, rtol=0)
        torch.testing.assert_close(both[1:2], m(x[1:2]), atol=1e-6, rtol=0)


# ---- RCD-Net: tied (release) parameters and the kernel dictionary ----

def _distinct_release_params(fx: dict) -> int:
    """Values the release really learns: its expand() copies share one value."""
    p = fx["params"]
    n = fx["param_count"] - sum(math.prod(p[k]) for k in ("conv", "eta11", "eta12"))
    n -= math.prod(p["w_z_f"]) - 9
    return n - sum(math.prod(s) - 1 for k, s in p.items() if k.endswith("tau") and k != "tau")


def test_rcdnet_tied_state_dict_is_the_releases_and_counts_distinct_values():
    fx = load_keys("rcdnet")
    m = _on_meta(RCDNet)
    assert {k: list(v.shape) for k, v in m.state_dict().items()} == {**fx["params"], **fx["buffers"]}
    assert count_params(m) == _distinct_release_params(fx) == 3_040_494


def _release_like_state(seed: int = 2) -> dict:
    """A release-style checkpoint of the tiny config: every expand() copy holds the same value."""
    m = fill(RCDNet(stages=3, num_m=4, num_z=4, tied=False), seed)
    with torch.no_grad():
        m.conv.copy_(m.weight0.expand_as(m.conv))
        m.eta11.fill_(m.eta1.item())
        m.eta12.fill_(m.eta2.item())
        m.w_z_f.copy_(m.w_z_f[0, 0].expand_as(m.w_z_f))
        for k, p in m.named_parameters():
            if k.endswith(".tau"):
                p.fill_(p.flatten()[0].item())
    return m.state_dict()


def test_rcdnet_tied_and_untied_agree_on_a_release_style_checkpoint():
    sd = _release_like_state()
    tied, untied = RCDNet(stages=3, num_m=4, num_z=4), RCDNet(stages=3, num_m=4, num_z=4, tied=False)
    tied.load_state_dict(sd, strict=True)
    untied.load_state_dict(sd, strict=True)
    x = torch.rand(1, 3, 12, 10, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(tied.eval()(x), untied.eval()(x), atol=1e-5, rtol=0)
        back = RCDNet(stages=3, num_m=4, num_z=4, tied=False)
        back.load_state_dict(tied.state_dict(), strict=True)   # tied checkpoints are release-shaped
        torch.testing.assert_close(back.eval()(x), untied(x), atol=1e-5, rtol=0)


def test_rcdnet_tied_rejects_a_checkpoint_whose_copies_differ():
    sd = _release_like_state()
    sd["eta11"] = sd["eta11"].clone()
    sd["eta11"][1] += 1.0
    with pytest.raises(ValueError, match="eta11.*tied=False"):
        RCDNet(stages=3, num_m=4, num_z=4).load_state_dict(sd)


def test_rain_kernels_follow_the_release_script_formula():
    k = rain_kernels().double()
    assert k.shape == (3, 32, 9, 9)
    assert torch.equal(k[0], k[1]) and torch.equal(k[0], k[2])
    torch.testing.assert_close(k[0].sum((1, 2)), torch.ones(32, dtype=torch.float64), atol=1e-6, rtol=0)
    k1 = k[0, 0]  # kernel 1: length 2.5 + 1/4, width 0.25, no dead zone; peak at the centre
    assert k1.argmax() == 4 * 9 + 4
    assert math.isclose(k1[4, 5] / k1[4, 4], math.exp(-1 / (2 * 0.25 ** 2)), rel_tol=1e-5)
    assert math.isclose(k1[5, 4] / k1[4, 4], math.exp(-(1 / 2.75) ** 2 / (2 * 0.25 ** 2)), rel_tol=1e-5)
    k13 = k[0, 12]  # kernel 13: dead zone round(4 * 0.2) = 1 -> a flat 3x3 centre, width 0.5, length 5.25
    assert torch.allclose(k13[3:6, 3:6], k13[4, 4].expand(3, 3))
    assert math.isclose(k13[6, 4] / k13[4, 4], math.exp(-(1 / 5.25) ** 2 / (2 * 0.5 ** 2)), rel_tol=1e-5)
    assert k13[4, 6] < k13[6, 4]  # streaks are vertical


def test_rain_kernel_files_load(tmp_path):
    from scipy.io import savemat

    kern = torch.rand(3, 4, 9, 9, generator=torch.Generator().manual_seed(0))
    savemat(tmp_path / "init_kernel.mat", {"C9": kern.double().numpy()})
    torch.save(kern, tmp_path / "k.pt")
    torch.testing.assert_close(load_rain_kernels(tmp_path / "init_kernel.mat"), kern)
    m = RCDNet(stages=3, num_m=4, num_z=4, rain_kernel=tmp_path / "k.pt")
    torch.testing.assert_close(m.weight0.detach(), kern)
    with pytest.raises(FileNotFoundError):
        RCDNet(rain_kernel=tmp_path / "missing.mat")
    with pytest.raises(ValueError, match="shape"):
        RCDNet(stages=3, num_m=8, num_z=4, rain_kernel=tmp_path / "k.pt")


# ---- operations against direct formulas ----

def test_taylor_attention_is_first_order_softmax_expansion():
    torch.manual_seed(0)
    heads, d, h, w = 2, 4, 4, 5
    att = TaylorAttention(dim=heads * d, heads=heads, qk_norm=0.5)
    with torch.no_grad():
        att.temperature.copy_(torch.tensor([0.7, 1.3]).view(2, 1, 1))
        x = torch.randn(1, heads * d, h, w)
        q, k, v = (t.reshape(heads, d, h * w) for t in att.qkv_dwconv(att.qkv(x)).chunk(3, 1))
        q = q / (q.norm(dim=1, keepdim=True) / 0.5 + 1e-6)
        k = k / (k.norm(dim=1, keepdim=True) / 0.5 + 1e-6)
        gate = torch.sigmoid(att.refine_att(q.reshape(1, heads, d, h, w), k.reshape(1, heads, d, h, w)))
        ref = torch.zeros(heads, d, h * w)
        for hd in range(heads):
            for i in range(h * w):                     # exp(q_i . k_j) ~ 1 + q_i . k_j, normalised over j
                wts = torch.stack([1 + q[hd, :, i] @ k[hd, :, j] for j in range(h * w)])
                ref[hd, :, i] = (v[hd] * wts).sum(1) / wts.sum() * att.temperature[hd, 0, 0] \
                    * gate[0, hd].flatten()[i]
        expected = att.project_out(ref.reshape(1, heads * d, h, w))
        torch.testing.assert_close(att(x), expected, atol=1e-5, rtol=1e-5)


def test_deformable_embedding_against_shifted_depthwise_convs():
    torch.manual_seed(0)
    emb = DeformEmbed(4, 6, offset_clamp=(-3.0, 3.0))
    x = torch.rand(2, 4, 7, 9) + 0.5
    with torch.no_grad():
        emb.offset_generator[1].weight.zero_()  # zero offsets: a plain depthwise 3x3 conv
        ref = F.hardswish(emb.pwconv(F.conv2d(x, emb.dcn.weight, padding=1, groups=4)))
        torch.testing.assert_close(emb(x), ref, atol=1e-5, rtol=1e-5)
        emb.offset_generator[0].weight.fill_(1.0)  # positive input and weights: every offset is large and
        emb.offset_generator[1].weight.fill_(10.0)  # positive, so clamped to +3 rows and +3 columns
        xp = F.pad(x, (1, 4, 1, 4))[..., 3:, 3:]  # tap (a, b) of output (i, j) reads x[i+a+2, j+b+2], 0 outside
        ref = F.hardswish(emb.pwconv(F.conv2d(xp, emb.dcn.weight, groups=4)))
        torch.testing.assert_close(emb(x), ref, atol=1e-5, rtol=1e-5)


def test_fourier_block_with_identity_amplitude_and_zero_phase_change_adds_its_input():
    torch.manual_seed(0)
    blk = FourierBlock(3)
    with torch.no_grad():
        blk.mag.weight.copy_(torch.eye(3).view(3, 3, 1, 1))
        blk.mag.bias.zero_()
        blk.pha[2].weight.zero_()
        blk.pha[2].bias.zero_()
        x = torch.randn(1, 3, 8, 6)
        torch.testing.assert_close(blk(x), blk.main(x) + x, atol=1e-5, rtol=1e-5)


# ---- training path, sizes, failures ----

TINY_MODELS = {
    "taylorformer": (TaylorFormer.tiny, (16, 24), set()),
    "fsdgn": (FSDGN.tiny, (32, 48), set()),
    "rcdnet": (RCDNet.tiny, (12, 10), {"mnet."}),
    "deeplpf": (DeepLPF.tiny, (32, 40), {"backbonenet.unet.conv1.", "backbonenet.unet.conv2.",
                                         "backbonenet.unet.conv3.", "backbonenet.unet.local_net."}),
}


@pytest.mark.parametrize("name", sorted(TINY_MODELS))
def test_tiny_models_train_and_keep_shape(name):
    build, (h, w), unused = TINY_MODELS[name]
    torch.manual_seed(0)
    m = build().train()
    x = torch.rand(2, 3, h, w)
    y = m(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    (y - torch.rand_like(y)).abs().mean().backward()
    no_grad = {k for k, p in m.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0}
    expected = {k for k, _ in m.named_parameters() if any(k.startswith(u) for u in unused)}
    assert no_grad == expected, sorted(no_grad ^ expected)[:10]


@pytest.mark.parametrize("build,shape,match", [
    (TaylorFormer.tiny, (1, 3, 12, 16), "divisible by 8"),
    (FSDGN.tiny, (1, 3, 24, 32), "divisible by 16"),
    (DeepLPF.tiny, (1, 3, 16, 64), "H, W >= 32"),
    (RCDNet.tiny, (3, 12, 12), r"\(B, 3, H, W\)"),
])
def test_bad_input_sizes_raise(build, shape, match):
    with pytest.raises(ValueError, match=match):
        build()(torch.rand(*shape))


def test_bad_configs_raise():
    with pytest.raises(ValueError, match="1, 2, 4 or 8 heads"):
        TaylorFormer(dims=(6, 12, 18, 24), heads=(1, 2, 3, 4))
    with pytest.raises(ValueError, match="2 \\* dims\\[0\\]"):
        TaylorFormer(dims=(8, 24, 24, 32))
    with pytest.raises(ValueError, match="stages >= 3"):
        RCDNet(stages=2)
    with pytest.raises(ValueError, match="head_size"):
        DeepLPF(head_size=32)
    with pytest.raises(ValueError, match="five levels"):
        FSDGN(widths=(8, 8, 8))
