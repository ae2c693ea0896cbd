"""Release fidelity of DA-CLIP's universal restorer (IR-SDE ConditionalUNet + IRSDE, irlib.models.irsde) and of
the DA-CLIP controller (irlib.models.daclip), against facts generated from Algolzw/daclip-uir
(tests/fixtures/release/irsde_*, daclip_*): state_dict keys and shapes, outputs with the same parameter values,
the SDE's schedule and step numbers, strict loading, and a tiny training step."""
from __future__ import annotations

import pytest
import torch

from irlib.models import count_params
from irlib.models.irsde import ConditionalUNet, IRSDE, theta_schedule
from release_fixtures import FIXTURES, fill, load_keys, state_shapes

COMMIT = "c2cc14146faac85680b4cb39ece4ef9e2a7c7c24"


def _meta(make):
    with torch.device("meta"):
        return make()


def _same_state(model: torch.nn.Module, fx: dict) -> None:
    params, buffers = state_shapes(model)
    assert set(params) == set(fx["params"]), (sorted(set(params) - set(fx["params"]))[:5],
                                              sorted(set(fx["params"]) - set(params))[:5])
    bad = {k: (params[k], fx["params"][k]) for k in params if params[k] != fx["params"][k]}
    assert not bad, list(bad.items())[:5]
    assert buffers == fx["buffers"]
    assert count_params(model) == fx["param_count"]


def _pt(name: str) -> dict:
    return torch.load(FIXTURES / f"{name}.pt", weights_only=True)


# ------------------------------------------------------------------------------------------ IR-SDE U-Net
def test_unet_state_dict_is_the_release_universal_model():
    fx = load_keys("irsde_unet")
    assert fx["source"]["repo"] == "Algolzw/daclip-uir" and fx["source"]["commit"] == COMMIT
    assert fx["config"] == dict(in_nc=3, out_nc=3, nf=64, ch_mult=[1, 2, 4, 8], context_dim=512,
                                use_degra_context=True, use_image_context=True)
    _same_state(_meta(lambda: ConditionalUNet(**fx["config"])), fx)
    assert fx["param_count"] == 48_975_747


def test_unet_defaults_are_the_option_file():
    fx = load_keys("irsde_unet")
    _same_state(_meta(ConditionalUNet), fx)


def test_unet_release_checkpoint_loads_strictly_and_rejects_a_plain_irsde_file():
    fx = load_keys("irsde_unet")
    sd = {k: torch.full(s, 0.5) for k, s in fx["params"].items()}
    m = _meta(ConditionalUNet)
    m.load_state_dict(sd, strict=True, assign=True)
    assert float(m.prompt.detach().mean()) == 0.5
    plain = {k: v for k, v in sd.items() if not k.startswith(("prompt", "text_mlp"))}
    with pytest.raises(RuntimeError, match="Missing key"):
        _meta(ConditionalUNet).load_state_dict(plain, strict=True, assign=True)


@pytest.mark.parametrize("name", ["irsde_unet_small", "irsde_unet_small_noctx"])
def test_unet_computes_the_release_output(name):
    fx = _pt(name)
    m = fill(ConditionalUNet(**fx["config"]), scale=fx["scale"]).eval()
    if name == "irsde_unet_small":  # 20 x 12: the reflect padding to a multiple of 16 is exercised
        assert fx["xt"].shape[-2] % 16 and fx["xt"].shape[-1] % 16
    with torch.no_grad():
        y = m(fx["xt"], fx["cond"], fx["time"], text_context=fx.get("text_context"),
              image_context=fx.get("image_context"))
    assert y.shape == fx["output"].shape and float(fx["output"].std()) > 0.05
    torch.testing.assert_close(y, fx["output"], atol=1e-5, rtol=1e-5)


def test_unet_contexts_change_the_output():
    fx = _pt("irsde_unet_small")
    m = fill(ConditionalUNet(**fx["config"]), scale=fx["scale"]).eval()
    args = (fx["xt"], fx["cond"], fx["time"])
    with torch.no_grad():
        full = m(*args, text_context=fx["text_context"], image_context=fx["image_context"])
        other_img = m(*args, text_context=fx["text_context"], image_context=fx["image_context"].flip(0))
        no_txt = m(*args, image_context=fx["image_context"])
    assert float((full - other_img).abs().max()) > 1e-4
    assert float((full - no_txt).abs().max()) > 1e-4


def test_unet_rejects_levels_narrower_than_a_head():
    with pytest.raises(ValueError, match="32 channels"):
        ConditionalUNet(nf=16)


def test_unet_tiny_trains_one_step_with_the_release_loss():
    torch.manual_seed(0)
    m = ConditionalUNet.tiny()
    sde = IRSDE(max_sigma=50, T=100)
    gt, lq = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    tc, ic = torch.randn(2, 24), torch.randn(2, 24)
    sde.set_mu(lq)
    t = torch.tensor([5, 80]).view(2, 1, 1, 1)
    xt = sde.noisy_state(gt, t)
    loss = sde.training_loss(m(xt, lq, t.squeeze(), text_context=tc, image_context=ic), xt, gt, t)
    loss.backward()
    grads = {k: p.grad for k, p in m.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    # zero-initialised cross-attention output still receives gradient (it is what training moves first)
    assert float(grads["mid_attn.fn.fn.proj_out.weight"].abs().sum()) > 0
    assert float(grads["prompt"].abs().sum()) > 0 and float(grads["text_mlp.0.weight"].abs().sum()) > 0


# --------------------------------------------------------------------------------------------------- SDE
@pytest.fixture(scope="module")
def sde_facts() -> dict:
    return _pt("irsde_sde")


@pytest.mark.parametrize("schedule", ["cosine", "linear", "constant"])
def test_sde_schedule_is_the_release(sde_facts, schedule):
    ref = sde_facts[schedule]
    s = IRSDE(max_sigma=50, T=100, schedule=schedule, eps=0.005)
    assert s.max_sigma == pytest.approx(ref["max_sigma"]) == pytest.approx(50 / 255)
    for k in ("thetas", "sigmas", "thetas_cumsum", "sigma_bars"):
        torch.testing.assert_close(getattr(s, k), ref[k], atol=1e-7, rtol=1e-6)
    torch.testing.assert_close(s.dt, ref["dt"].to(s.dt.dtype), atol=0, rtol=1e-6)
    assert s.thetas.shape == (101,) and float(s.thetas_cumsum[0]) == 0.0
    # the terminal mean keeps eps of x0 - mu, and sigma_bar(T) is max_sigma * sqrt(1 - eps^2)
    assert float(torch.exp(-s.thetas_cumsum[-1] * s.dt)) == pytest.approx(0.005, rel=1e-5)
    assert float(s.sigma_bars[-1]) == pytest.approx(50 / 255 * (1 - 0.005 ** 2) ** 0.5, rel=1e-5)


def test_sde_cosine_thetas_are_the_truncated_cosine_betas():
    th = theta_schedule("cosine", 10)
    import math
    f = [math.cos(((i / 12) + 0.008) / 1.008 * math.pi / 2) ** 2 for i in range(13)]
    expect = [1 - f[i] / f[0] for i in range(1, 12)]
    torch.testing.assert_close(th, torch.tensor(expect), atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError, match="unknown theta schedule"):
        theta_schedule("sigmoid", 10)


def test_sde_steps_are_the_release(sde_facts):
    f = sde_facts["steps"]
    s = IRSDE(max_sigma=50, T=100, schedule="cosine", eps=0.005)
    s.set_mu(f["mu"])
    t = f["t"]
    close = dict(atol=2e-6, rtol=1e-5)
    torch.testing.assert_close(s.mu_bar(f["x0"], t), f["mu_bar"], **close)
    torch.testing.assert_close(s.sigma_bar(t), f["sigma_bar"], **close)
    score = s.score_from_noise(f["noise_pred"], t)
    torch.testing.assert_close(score, f["score"], **close)
    torch.testing.assert_close(s.x0_from_noise(f["xt"], f["noise_pred"], t), f["init_state"], **close)
    torch.testing.assert_close(s.noise_from_states(f["xt"], f["x0"], t), f["real_noise"], **close)
    torch.testing.assert_close(s.reverse_optimum_step(f["xt"], f["x0"], t), f["optimum_step"], **close)
    torch.testing.assert_close(s.reverse_optimum_std(t), f["optimum_std"], **close)
    torch.testing.assert_close(s.reverse_sde_step_mean(f["xt"], score, t), f["sde_step_mean"], **close)
    torch.testing.assert_close(s.reverse_ode_step(f["xt"], score, t), f["ode_step"], **close)
    torch.testing.assert_close(s.reverse_sde_step(f["xt"], score, t, z=f["sde_step_z"]), f["sde_step"], **close)
    torch.testing.assert_close(s.reverse_posterior_step(f["xt"], f["noise_pred"], t, z=f["posterior_step_z"]),
                               f["posterior_step"], **close)
    ts = f["random_states_t"]
    torch.testing.assert_close(s.noisy_state(f["x0"], ts, z=f["random_states_z"]), f["random_states"], **close)
    torch.testing.assert_close(s.reverse_optimum_std(1), sde_facts["optimum_std_1"], **close)
    torch.testing.assert_close(s.reverse_optimum_std(100), sde_facts["optimum_std_T"], **close)


def test_sde_noise_round_trip_and_perfect_noise_gives_the_optimum():
    s = IRSDE(max_sigma=50, T=100)
    g = torch.Generator().manual_seed(0)
    x0, mu = torch.rand(2, 3, 8, 8, generator=g), torch.rand(2, 3, 8, 8, generator=g)
    s.set_mu(mu)
    t = torch.tensor([10, 60]).view(2, 1, 1, 1)
    z = torch.randn(2, 3, 8, 8, generator=g)
    xt = s.noisy_state(x0, t, z=z)
    torch.testing.assert_close(s.noise_from_states(xt, x0, t), z, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(s.x0_from_noise(xt, z, t), x0, atol=1e-4, rtol=1e-4)
    # the true noise makes the posterior mean the optimum step exactly
    mean = s.reverse_posterior_step(xt, z, t, z=torch.zeros_like(xt))
    torch.testing.assert_close(mean, s.reverse_optimum_step(xt, x0, t), atol=1e-4, rtol=1e-4)


def test_sde_sampler_runs_and_is_seeded():
    torch.manual_seed(0)
    m = ConditionalUNet.tiny(context_dim=None).eval()
    s = IRSDE(max_sigma=50, T=4)
    lq = torch.rand(1, 3, 16, 16)
    a = s.sample(m, lq, generator_seed=3)
    b = s.sample(m, lq, generator_seed=3)
    c = s.sample(m, lq, mode="sde", generator_seed=3)
    assert a.shape == lq.shape and torch.equal(a, b) and not torch.equal(a, c)
    with pytest.raises(ValueError, match="mode"):
        s.sample(m, lq, mode="ode")
