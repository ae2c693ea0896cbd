import copy

import pytest
import torch

from irlib import spn
from irlib.models.edsr import EDSR


def test_history_follows_equation_1():
    torch.manual_seed(0)
    m = EDSR(2, 8, 1)
    h = spn.HistoryModels(m, steps=(2, 3), w=0.25)
    theta0 = {k: v.clone() for k, v in m.state_dict().items()}
    with torch.no_grad():
        for p in m.parameters():
            p.add_(1.0)
    h.after_step(m, 2)  # only copy 0 is due
    stack = h._stacked("p_")["head.weight"]
    want = 0.25 * theta0["head.weight"] + 0.75 * m.head.weight
    assert torch.allclose(stack[0], want) and torch.allclose(stack[1], theta0["head.weight"])
    h.after_step(m, 5)  # neither is due
    assert torch.allclose(stack[0], want)


def test_batched_and_loop_negatives_agree_exactly_in_float64():
    torch.manual_seed(0)
    m = EDSR(2, 8, 2).double()
    h = spn.HistoryModels(m, steps=(1, 2, 4))
    with torch.no_grad():
        for p in m.parameters():
            p.mul_(1.1)
    h.after_step(m, 2)
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    h.batched = True
    a = h(x)
    h.batched = False
    b = h(x)
    assert a.shape == (3, 2, 3, 16, 16) and torch.allclose(a, b, atol=1e-12)
    ref = copy.deepcopy(m)
    ref.load_state_dict({**{k: v[0] for k, v in h._stacked("p_").items()}, **{k: v[0] for k, v in h._stacked("b_").items()}})
    assert torch.allclose(b[0], ref(x), atol=1e-12)


def test_spn_loss_value_and_gradient_sign():
    torch.manual_seed(0)
    m = EDSR(2, 8, 1)
    ident = torch.nn.Identity()
    cfg = spn.SPNConfig(steps=(1,), layer_weights=(1.0,))

    class Pix(torch.nn.Module):
        def forward(self, x):
            return [x]

    loss = spn.SPNLoss(m, cfg, embed=Pix())
    x = torch.rand(2, 3, 8, 8)
    out = m(x).detach().requires_grad_()
    neg = loss.negatives(x)
    v = loss(out, {"lq": x})
    assert float(v) == pytest.approx(float((out - neg[0]).abs().mean()), abs=1e-6)
    terms = spn.spn_terms(m, cfg, embed=Pix())
    assert terms["spn_neg"][0] == -cfg.lam  # L = L_rec - λ L_neg
    del ident


def test_presets():
    assert spn.PAPER.lam == 1e-4 and spn.PAPER.steps == (100, 500, 1000, 2000) and spn.PAPER.w == 0.1
    assert spn.PUBLIC_CODE.lam == 1e-3 and spn.PUBLIC_CODE.arch == "vgg16"
    assert spn.PUBLIC_CODE.layer_weights == (0.2, 0.3, 0.5) and spn.PUBLIC_CODE.steps == (100, 200, 500, 1000)
    with pytest.raises(ValueError):
        spn.HistoryModels(EDSR(2, 8, 1), steps=(1,), w=1.5)
