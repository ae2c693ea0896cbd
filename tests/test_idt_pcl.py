"""IDT (SPN Table 2 backbone) and the PCL-SR loss (SPN Table 5)."""
import itertools

import pytest
import torch
import torch.nn.functional as F

from irlib.losses import PCLLoss
from irlib.models import count_params
from irlib.models.idt import IDT, STMBlock, WTMBlock, _clipped_index

TINY = dict(img_size=32, embed_dim=4, win_size=2, num_heads=(1, 1, 2, 2, 2, 2, 2, 1, 1), k_bounds=(8, 4, 2, 1), wtm=(1,) * 9)


def test_idt_has_the_published_16_42M_parameters_and_release_key_names():
    m = IDT()
    assert count_params(m) == 16_416_463
    assert round(count_params(m) / 1e6, 2) == 16.42  # IDT's published size
    sd = m.state_dict()
    for k in ("input_proj.proj.0.weight", "encoderlayer_0.blocks.3.attn.qkv.to_kv.weight", "dowsample_3.conv.0.weight",
              "bottle.blocks.0.mlp.dwconv.0.weight", "upsample_0.deconv.0.weight", "decoderlayer_3.blocks.3.norm2.weight",
              "output_proj.proj.0.weight"):
        assert k in sd, k
    assert len(m.encoderlayer_0.blocks) == 4 and len(m.bottle.blocks) == 1 and len(m.decoderlayer_0.blocks) == 2
    assert sd["encoderlayer_0.blocks.3.attn.relative_position_bias_table"].shape == (31 * 31, 1)  # STM, k=16
    assert sd["encoderlayer_0.blocks.0.attn.relative_position_bias_table"].shape == (15 * 15, 1)  # WTM, k=8
    assert sd["decoderlayer_0.blocks.1.attn.Position_Extract.0.weight"].shape == (64, 1, 3, 3)     # 2x2 window grid


def test_clipped_relative_index_matches_its_definition():
    gh, gw, k = 3, 5, 2
    idx = _clipped_index(gh, gw, k)
    cells = list(itertools.product(range(gh), range(gw)))
    for a, (ya, xa) in enumerate(cells):
        for b, (yb, xb) in enumerate(cells):
            dy, dx = max(-(k - 1), min(k - 1, ya - yb)), max(-(k - 1), min(k - 1, xa - xb))
            assert idx[a, b] == (dy + k - 1) * (2 * k - 1) + (dx + k - 1)


def test_stm_puts_windows_back_in_place_unlike_the_release_order():
    torch.manual_seed(0)
    h = w = 8
    x = torch.randn(2, h * w, 4)
    for code_order, same in ((False, True), (True, False)):
        blk = STMBlock(4, 1, grid=4, k_bound=4, window=2, code_token_order=code_order)
        blk.attn.forward = lambda t, gh, gw: t          # identity attention
        blk.mlp.forward = lambda t, hh, ww: torch.zeros_like(t)
        assert torch.allclose(blk(x, h, w), 2 * x) is same


def test_wtm_attention_stays_inside_its_window():
    torch.manual_seed(0)
    blk = WTMBlock(8, 2, window=4)
    blk.mlp.forward = lambda t, hh, ww: torch.zeros_like(t)
    x = torch.randn(1, 8, 8, 8)
    y0 = blk(x.flatten(1, 2), 8, 8).view(1, 8, 8, 8)
    x2 = x.clone()
    x2[0, 1, 2] += 1.0                                 # a pixel in the top-left 4x4 window
    diff = (blk(x2.flatten(1, 2), 8, 8).view(1, 8, 8, 8) - y0).abs().sum(-1)[0]
    assert diff[:4, :4].sum() > 0 and diff[4:].sum() == 0 and diff[:, 4:].sum() == 0


def test_idt_shapes_gradients_and_size_error():
    torch.manual_seed(0)
    m = IDT(**TINY)
    x = torch.rand(2, 3, 64, 32)
    y = m(x)
    assert y.shape == x.shape
    y.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())
    with pytest.raises(ValueError, match="divisible by 32"):
        m(torch.rand(1, 3, 40, 40))


def _laplacian_energy(x):
    k = torch.tensor([[0.0, 1, 0], [1, -4, 1], [0, 1, 0]]).view(1, 1, 3, 3).repeat(3, 1, 1, 1)
    return F.conv2d(x, k, groups=3).abs().mean().item()


def test_pcl_samples_lie_on_either_side_of_the_ground_truth_in_frequency():
    from irlib.data import PatchBatches, split_samples

    b = PatchBatches(split_samples(64)[0], 32, 4, ("srx4",), seed=0)(0)
    pos, neg = PCLLoss(scale=4, n_aug=3).samples(b["gt"], b["lq"])
    assert len(pos) == 4 and len(neg) == 4 and all(t.shape == b["gt"].shape for t in pos + neg)
    e = _laplacian_energy(b["gt"])
    assert all(_laplacian_energy(p) > e for p in pos[1:]) and all(_laplacian_energy(n) < e for n in neg)


def test_pcl_info_nce_equals_the_formula():
    torch.manual_seed(0)
    loss = PCLLoss(layers=(0,), tau=0.5)
    o, p1, p2, n1, n2 = (torch.randn(3, 5, 2, 2) for _ in range(5))
    got = loss.info_nce([o], [[p1], [p2]], [[n1], [n2]])

    def cos(a, b):  # mean over positions of the cosine between channel vectors
        return F.cosine_similarity(a, b, dim=1).mean((1, 2))
    want = 0
    for p in (p1, p2):
        num = torch.exp(cos(o, p) / 0.5)
        den = num + torch.exp(cos(o, n1) / 0.5) + torch.exp(cos(o, n2) / 0.5)
        want = want + (-torch.log(num / den)).mean()
    assert torch.allclose(got, want / 2, atol=1e-6)


def test_pcl_trains_its_embedding_and_sends_gradient_only_to_the_output():
    from irlib.data import PatchBatches, split_samples

    torch.manual_seed(0)
    b = PatchBatches(split_samples(64)[0], 32, 2, ("srx4",), seed=0)(0)
    loss = PCLLoss(scale=4)
    before = [p.detach().clone() for p in loss.embed.parameters()]
    out = F.interpolate(b["lq"], scale_factor=4, mode="bicubic").clamp(0, 1).requires_grad_(True)
    v = loss(out, b)
    assert any(not torch.equal(a, p) for a, p in zip(before, loss.embed.parameters()))  # one embedding step taken
    d_grads = [p.grad.clone() for p in loss.embed.parameters()]
    v.backward()
    assert out.grad.abs().sum() > 0
    assert all(torch.equal(g, p.grad) for g, p in zip(d_grads, loss.embed.parameters()))  # no generator grads in D
    sd = loss.state_dict()
    again = PCLLoss(scale=4, seed=123)
    again.load_state_dict(sd)
    for a, c in zip(loss.samples(b["gt"], b["lq"])[1], again.samples(b["gt"], b["lq"])[1]):
        assert torch.equal(a, c)  # the sampling generator resumes too
