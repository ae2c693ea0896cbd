"""IDT's reconstruction loss, -SSIM (jiexiaou/IDT train_derain.py line 73, loss/SSIM.py): irlib.losses.neg_ssim
against the release's own output (a fact fixture), against irlib.metrics.ssim, and its gradient against finite
differences; and the plan's IDT runs train with it."""
import json
from pathlib import Path

import torch
import torch.nn.functional as F

from irlib import metrics
from irlib.losses import LOSSES, neg_ssim, ssim_map

FACT = json.loads((Path(__file__).parent / "fixtures" / "release" / "idt_ssim_loss.json").read_text())


def _inputs() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(20)
    gt = torch.rand(2, 3, 24, 20, generator=g, dtype=torch.float64)
    out = (gt + 0.15 * torch.randn(2, 3, 24, 20, generator=g, dtype=torch.float64)).clamp(0, 1)
    return out, gt


def test_neg_ssim_equals_the_releases_value_and_gradient():
    out, gt = _inputs()
    o = out.float().requires_grad_(True)
    loss = neg_ssim(o, {"gt": gt.float()})
    loss.backward()
    assert abs(loss.item() + FACT["ssim"]) < 1e-6
    assert abs(o.grad.abs().sum().item() - FACT["neg_ssim_grad_sum_abs"]) < 1e-5
    assert abs(o.grad[0, 0, 5, 7].item() - FACT["grad_0_0_5_7"]) < 1e-7
    assert abs(o.grad[1, 2, 0, 0].item() - FACT["grad_1_2_0_0"]) < 1e-7   # a corner: the zero padding matters


def test_ssim_map_agrees_with_the_metric():
    out, gt = _inputs()
    # valid region: the metric's SSIM (0..255 scale, constants scaled alike) image by image
    valid = ssim_map(out, gt, pad=False).flatten(1).mean(1)
    assert torch.allclose(valid, metrics.ssim(out, gt).double(), atol=1e-6)
    # zero padding = the valid SSIM of zero-padded images (the release's borders see zeros)
    padded = ssim_map(out, gt).flatten(1).mean(1)
    ref = metrics.ssim(F.pad(out, (5,) * 4), F.pad(gt, (5,) * 4)).double()
    assert torch.allclose(padded, ref, atol=1e-6)
    assert not torch.allclose(padded, valid, atol=1e-3)
    assert abs(neg_ssim(gt, {"gt": gt}).item() + 1) < 1e-9   # identical images: the minimum, -1


def test_neg_ssim_gradient_matches_finite_differences():
    g = torch.Generator().manual_seed(3)
    gt = torch.rand(1, 3, 13, 12, generator=g, dtype=torch.float64)
    out = (gt + 0.2 * torch.rand(1, 3, 13, 12, generator=g, dtype=torch.float64)).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: neg_ssim(x, {"gt": gt}), (out,), eps=1e-6, atol=1e-7)


def test_neg_ssim_lowers_under_gradient_descent():
    out, gt = _inputs()
    x = out.float().clone().requires_grad_(True)
    opt = torch.optim.SGD([x], lr=50.0)
    first = None
    for _ in range(20):
        opt.zero_grad()
        loss = LOSSES["neg_ssim"](x, {"gt": gt.float()})
        first = loss.item() if first is None else first
        loss.backward()
        opt.step()
    assert loss.item() < first - 0.02


def test_idt_runs_train_with_neg_ssim():
    from irlib import plan
    from irlib.engine.recipe import recipe

    runs = [r for r in plan.build("spn", "full").runs() if r.net == "IDT"]
    assert len(runs) >= 10
    for r in runs:
        assert r.terms[0].name == "neg_ssim" and r.terms[0].weight == 1.0 and r.schedule.rec == "neg_ssim"
        assert recipe(r)["rec_loss"] == "1*neg_ssim[0,1]"
        assert "l1" not in {t.name for t in r.terms}
