import pytest
import torch

from irlib import diffloss as dl
from irlib.data.fetch import ChecksumError


@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    u = dl.ADMUNet(dl.ADM_TINY)
    for p in u.parameters():  # zero-initialised output convs would hide gradient bugs
        torch.nn.init.normal_(p, std=0.05) if p.dim() > 1 else None
    return u.eval().requires_grad_(False)


def test_gradient_reaches_restorer_through_frozen_unet(unet):
    net = torch.nn.Conv2d(3, 3, 3, padding=1)
    x = torch.rand(2, 3, 32, 32)
    loss = dl.DiffLoss(unet, lam=0.01)
    v = loss(net(x), {"gt": x})
    v.backward()
    assert net.weight.grad is not None and net.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in unet.parameters())
    assert set(loss.last) == {"L_nat", "L_sem"}


def test_public_code_variant_has_no_gradient(unet):
    x = torch.rand(1, 3, 32, 32)
    net = torch.nn.Conv2d(3, 3, 3, padding=1)
    v = dl.DiffLoss(unet, detach_restored=True)(net(x), {"gt": x})
    assert not v.requires_grad


def test_same_t_and_noise_means_zero_loss_for_perfect_output(unet):
    x = torch.rand(2, 3, 32, 32)
    for target in ("eps", "x0", "xprev"):
        assert float(dl.DiffLoss(unet, target=target)(x.clone(), {"gt": x})) == pytest.approx(0.0, abs=1e-10)


def test_explicit_eps_l_nat_matches_manual(unet):
    x, z = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)
    t, eps = torch.tensor([100]), torch.randn(1, 3, 32, 32)
    s = dl.DDPMSchedule()
    e1, h1 = unet(s.q_sample(x * 2 - 1, t, eps), t, return_h=True)
    e2, h2 = unet(s.q_sample(z * 2 - 1, t, eps), t, return_h=True)
    want = ((e1[:, :3] - e2[:, :3]) ** 2).mean() + 0.5 * ((h1 - h2) ** 2).mean()
    got = dl.DiffLoss(unet, lam=0.5)(z, {"gt": x}, t=t, eps=eps)
    assert float(got) == pytest.approx(float(want), rel=1e-5)


def test_schedule_inverts_forward():
    s = dl.DDPMSchedule()
    x0, eps, t = torch.rand(2, 3, 4, 4), torch.randn(2, 3, 4, 4), torch.tensor([10, 900])
    assert torch.allclose(s.pred_x0(s.q_sample(x0, t, eps), t, eps), x0, atol=1e-4)
    assert float(s.betas[0]) == pytest.approx(1e-4) and float(s.betas[-1]) == pytest.approx(0.02)


def test_load_adm_checks_and_pins_sha256(unet, tmp_path):
    f = tmp_path / "tiny_adm.pt"
    torch.save(unet.state_dict(), f)
    m = dl.load_adm(str(f), cfg=dl.ADM_TINY)
    assert (tmp_path / "tiny_adm.pt.sha256").is_file()
    x, t = torch.rand(1, 3, 32, 32), torch.tensor([5])
    assert torch.allclose(m(x, t), unet(x, t))
    with pytest.raises(ChecksumError):
        dl.load_adm(str(f), cfg=dl.ADM_TINY, sha256="0" * 64)
    with pytest.raises(RuntimeError, match="cannot download"):
        dl.load_adm("http://127.0.0.1:9/none.pt", cfg=dl.ADM_TINY, cache_dir=str(tmp_path / "c"))


def test_svd_hook_identity_at_zero_and_changes_h():
    h = torch.randn(2, 8, 4, 4)
    assert torch.equal(dl.svd_perturb_hook(0.0)(h), h)
    p = dl.svd_perturb_hook(1.0)(h)
    s0 = torch.linalg.svdvals(h.reshape(2, 8, -1))
    s1 = torch.linalg.svdvals(p.reshape(2, 8, -1))
    assert torch.allclose(s1[:, 0], 2 * s0[:, 0], rtol=1e-4) and torch.allclose(s1[:, 1:], s0[:, 1:], rtol=1e-4)


def test_bf16_weights_keep_groupnorm_fp32_and_pass_gradients():
    torch.manual_seed(0)
    unet = dl.ADMUNet(dl.ADM_TINY)
    x, t = torch.randn(2, 3, 32, 32), torch.tensor([3, 500])
    ref, h_ref = unet(x, t, return_h=True)
    unet.to_compute_dtype(torch.bfloat16)
    assert {p.dtype for n, p in unet.named_parameters() if isinstance(unet.get_submodule(n.rsplit(".", 1)[0]), torch.nn.GroupNorm)} == {torch.float32}
    assert unet.middle_block[0].in_layers[2].weight.dtype == torch.bfloat16
    xr = x.clone().requires_grad_(True)
    out, h = unet(xr, t, return_h=True)
    assert out.dtype == torch.float32 and h.dtype == torch.bfloat16
    assert float((out - ref).norm() / ref.norm()) < 5e-2 and float((h.float() - h_ref).norm() / h_ref.norm()) < 5e-2
    (g,) = torch.autograd.grad(out.square().mean(), xr)
    assert torch.isfinite(g).all() and g.abs().sum() > 0
