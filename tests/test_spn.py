"""SPN (learning from history): Eq. (1) history copies, their paper/release initialisation, Eq. (3), presets
checked against the released configuration, and the cost options (each within 1% of the fp32 eager path)."""
import copy

import pytest
import torch

from irlib import spn
from irlib.losses import VGGFeatures
from irlib.models.edsr import EDSR
from irlib.train import Trainer


def _first_param(m):
    return next(iter(dict(m.named_parameters()).items()))


def test_history_follows_equation_1():
    torch.manual_seed(0)
    m = EDSR(2, 8, 1)
    h = spn.HistoryModels(m, steps=(2, 3), w=0.25)
    name, p = _first_param(m)
    theta0 = p.detach().clone()
    with torch.no_grad():
        for q in m.parameters():
            q.add_(1.0)
    h.after_step(m, 2)  # only copy 0 is due
    stack = h._stacked("p_")[name]
    want = 0.25 * theta0 + 0.75 * p.detach()
    assert torch.allclose(stack[0], want) and torch.allclose(stack[1], theta0)
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
    first = {**{k: v[0] for k, v in h._stacked("p_").items()}, **{k: v[0] for k, v in h._stacked("b_").items()}}
    ref.load_state_dict({k: v for k, v in first.items() if k in ref.state_dict()})
    assert torch.allclose(b[0], ref(x), atol=1e-12)


def test_spn_loss_value_and_gradient_sign():
    torch.manual_seed(0)
    m = EDSR(2, 8, 1)
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


def test_presets_match_paper_and_release_config():
    assert spn.PAPER.lam == 1e-4 and spn.PAPER.steps == (100, 500, 1000, 2000) and spn.PAPER.w == 0.1
    assert spn.PAPER.init == "paper" and spn.PAPER.update_buffers
    # MCLIR options/FFANet_RESIDE_IN_fromScratch.yml: perceptual_weight 0.001, vgg16 relu1_2/2_2/3_3 at
    # 0.2/0.3/0.5, neg_iter [100, 200, 500, 1000], neg_decay 0.1, neg_start 0.1; model_neg blends parameters only
    p = spn.PUBLIC_CODE
    assert p.lam == 1e-3 and p.arch == "vgg16" and p.layers == ("relu1_2", "relu2_2", "relu3_3")
    assert p.layer_weights == (0.2, 0.3, 0.5) and p.steps == (100, 200, 500, 1000) and p.w == 0.1
    assert p.init == "release" and p.init_mix == 0.1 and not p.update_buffers
    with pytest.raises(ValueError, match="EMA weight"):
        spn.HistoryModels(EDSR(2, 8, 1), steps=(1,), w=1.5)
    with pytest.raises(ValueError, match="init must be"):
        spn.HistoryModels(EDSR(2, 8, 1), steps=(1,), init="random")
    with pytest.raises(ValueError, match="negatives must be"):
        spn.SPNFast(negatives="grouped")


class _ConvBN(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.bn = torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.BatchNorm2d(4)

    def forward(self, x):
        return self.bn(self.conv(x))


def test_paper_init_copies_theta_and_release_init_blends_a_fresh_network():
    torch.manual_seed(0)
    m = _ConvBN()
    m(torch.rand(4, 3, 8, 8) * 5)                       # training-mode forward: running stats move off 0/1
    paper = spn.HistoryModels(m, steps=(1, 2))
    for k, v in m.state_dict().items():
        if k != "bn.num_batches_tracked":
            stack = paper._stacked("p_" if k in dict(m.named_parameters()) else "b_")[k]
            assert torch.equal(stack[0], v) and torch.equal(stack[1], v), k
    seeds = iter(range(100))

    def fresh():
        torch.manual_seed(1000 + next(seeds))
        return _ConvBN()
    rel = spn.HistoryModels(m, steps=(1, 2), init="release", init_mix=0.1, update_buffers=False, fresh=fresh)
    f0, f1 = (torch.manual_seed(1000 + i) and _ConvBN() for i in range(2))
    for i, f in enumerate((f0, f1)):
        want = 0.1 * f.conv.weight + 0.9 * m.conv.weight
        assert torch.allclose(rel._stacked("p_")["conv.weight"][i], want, atol=1e-7)
        assert torch.equal(rel._stacked("b_")["bn.running_mean"][i], f.bn.running_mean)  # fresh buffers (zeros)
    assert not torch.allclose(rel._stacked("p_")["conv.weight"][0], rel._stacked("p_")["conv.weight"][1])


def test_update_buffers_true_copies_statistics_false_leaves_them():
    torch.manual_seed(0)
    m = _ConvBN()
    on, off = spn.HistoryModels(m, steps=(1,)), spn.HistoryModels(m, steps=(1,), update_buffers=False)
    before = off._stacked("b_")["bn.running_mean"][0].clone()
    m(torch.rand(4, 3, 8, 8) * 5)
    on.after_step(m, 1)
    off.after_step(m, 1)
    assert torch.equal(on._stacked("b_")["bn.running_mean"][0], m.bn.running_mean)
    assert torch.equal(off._stacked("b_")["bn.running_mean"][0], before)
    assert not torch.equal(before, m.bn.running_mean)


def test_release_init_without_factory_leaves_the_global_rng_alone():
    m = EDSR(2, 8, 1)
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    h = spn.HistoryModels(m, steps=(1, 2), init="release")
    assert torch.equal(torch.rand(3), expected)
    name = _first_param(m)[0]
    s = h._stacked("p_")[name]
    assert not torch.allclose(s[0], s[1])              # each copy has its own fresh draw


# ----------------------------------------------------------------------------------- cost options
FAST = {
    "vmap": spn.SPNFast(negatives="vmap"),
    "bf16-negatives": spn.SPNFast(bf16_negatives=True),
    "bf16-embed": spn.SPNFast(bf16_embed=True),
    "channels-last": spn.SPNFast(channels_last=True),
    "fused-embed": spn.SPNFast(fuse_embed=True),
    "compiled": spn.SPNFast(compile="default", compile_backend="aot_eager"),
}
LAYERS = ("relu1_1", "relu2_1", "relu3_1")
CFG = spn.SPNConfig(steps=(1, 2, 3, 4), lam=0.05, layers=LAYERS, layer_weights=(1 / 3,) * 3)


def _vgg(seed=0):
    torch.manual_seed(seed)
    return VGGFeatures("vgg19", LAYERS, pretrained=False)


@pytest.mark.parametrize("name", list(FAST))
def test_fast_path_loss_within_one_percent_of_fp32_eager(name):
    torch.manual_seed(0)
    m = EDSR(2, 8, 1)
    lq = torch.rand(2, 3, 16, 16)
    out = torch.rand(2, 3, 32, 32, requires_grad=True)
    ref = spn.SPNLoss(m, CFG, embed=_vgg())(out, {"lq": lq})
    got = spn.SPNLoss(m, CFG, embed=_vgg(), fast=FAST[name])(out, {"lq": lq})
    assert got.dtype == torch.float32
    assert abs(float(got) / float(ref) - 1) < 0.01
    g_ref, = torch.autograd.grad(ref, out)
    g, = torch.autograd.grad(got, out)
    assert torch.nn.functional.cosine_similarity(g.flatten(), g_ref.flatten(), dim=0) > 0.99


def _train(fast, lam=CFG.lam, steps=20):
    gen = torch.Generator().manual_seed(1)
    data = [{"lq": torch.rand(2, 3, 12, 12, generator=gen), "gt": torch.rand(2, 3, 24, 24, generator=gen)}
            for _ in range(steps)]
    torch.manual_seed(0)
    m = EDSR(2, 8, 1)
    w0 = torch.cat([p.detach().flatten() for p in m.parameters()])
    from irlib.losses import LOSSES
    terms = {"l1": (1.0, LOSSES["l1"])}
    if fast is not None:
        terms["spn"] = (-lam, spn.SPNLoss(m, CFG, embed=_vgg(), fast=fast))
    tr = Trainer(m, lambda s: data[s], terms, lr=2e-3, progress=False)
    log = tr.fit(steps)
    return log, torch.cat([p.detach().flatten() for p in m.parameters()]), w0


def test_training_follows_the_eager_path_on_every_fast_path():
    """20 steps of a small EDSR with L1 - λ·SPN on the reference and on each fast path (bf16 negatives
    excepted: see SPNFast). Per-step values of the small SPN term drift by a few % even between the two
    fp32 paths (loop vs vmap, identical math), because Adam turns round-off in near-zero gradients into full
    steps; hence the SPN term is compared on its mean over the run, the total loss at every step."""
    ref_log, ref_w, w0 = _train(spn.SPNFast())
    moved = (ref_w - w0).norm()
    assert (_train(None)[1] - ref_w).norm() > 0.1 * moved      # the SPN term matters in this setting
    for name, fast in FAST.items():
        if name == "bf16-negatives":
            continue
        log, w, _ = _train(fast)
        rel = ((log["loss"] - ref_log["loss"]).abs() / ref_log["loss"].abs()).max()
        # step 1: every copy still equals the model (paper init), so L_neg is 0 on both paths up to round-off
        assert abs(log["spn"][0]) < 1e-4 and abs(ref_log["spn"][0]) < 1e-4
        rel_spn = abs(log["spn"][1:].mean() / ref_log["spn"][1:].mean() - 1)
        assert rel < 0.01 and rel_spn < 0.01, (name, rel, rel_spn)
        assert (w - ref_w).norm() < 0.1 * moved, (name, float((w - ref_w).norm()), float(moved))


def test_release_copies_are_independent_draws_not_theta():
    """The pipeline seeds the model with the run's seed; copy i must not repeat that draw (MCLIR's copies are
    independent networks)."""
    for seed in (0, 1):
        torch.manual_seed(seed)
        m = EDSR(2, 8, 1)
        h = spn.HistoryModels(m, steps=(1, 2, 3), init="release", init_mix=1.0, seed=seed)
        for name, p in m.named_parameters():
            if p.dim() > 1:
                s = h._stacked("p_")[name]
                assert all(not torch.allclose(s[i], p) for i in range(3)), (seed, name)
                assert not torch.allclose(s[0], s[1]) and not torch.allclose(s[1], s[2])
    assert len({spn.history_seed(0, i) for i in range(4)} | {spn.history_seed(1, i) for i in range(4)}) == 8


def test_release_copies_of_a_plan_run_get_the_networks_own_init():
    """Through the plan's term builder: SwinIR's position-bias tables and trunc-normal(0.02) Linear weights are
    drawn by its constructor; re-running ``reset_parameters`` alone would leave the tables at θ's values."""
    from irlib.engine.features import FeatureBank
    from irlib.engine.runner import _term, build_model
    from irlib.engine.spec import RunSpec, Source, Term
    from irlib import losses
    from irlib.schedules import Schedule

    term = Term("spn", -1e-3, (("preset", "public_code"),))
    spec = RunSpec("spn", "SwinIR-light", (Source("offline", "srx4"),), (Term("l1"), term), Schedule(4, 2, 64, 1e-4),
                   net_kw=(("scale", 4),), size="tiny", weights="random")
    fb = FeatureBank("random", "tiny")
    torch.manual_seed(spec.seed)
    model = build_model(spec, fb)
    loss = _term(term, spec, model, fb, None, losses)
    h = loss.history
    stacked = h._stacked("p_")
    tables = [k for k in stacked if k.endswith("relative_position_bias_table")]
    assert tables
    theta = dict(model.named_parameters())
    for k in tables:   # 0.1 * fresh + 0.9 * theta with a fresh table of its own (not theta's)
        assert not torch.allclose(stacked[k][0], theta[k])
    lin = next(k for k, mod in model.named_modules() if isinstance(mod, torch.nn.Linear) and mod.weight.shape[0] >= 16)
    fresh_w = (stacked[lin + ".weight"][0] - 0.9 * theta[lin + ".weight"]) / 0.1
    bound = 1 / fresh_w.shape[1] ** 0.5                      # reset_parameters' kaiming-uniform bound
    assert float(fresh_w.std()) == pytest.approx(0.02, rel=0.3) and 0.02 < bound / 3 ** 0.5 * 0.7   # trunc_normal_(0.02)


def test_a_rehearsal_spn_run_keeps_one_history_copy_and_the_full_run_all_four():
    """The rehearsal caps SPN's history at one copy (in two steps none is ever updated, so the others would only
    repeat its forward pass); the full plan's same run keeps the paper's four steps."""
    from irlib import plan
    from irlib.engine.features import FeatureBank
    from irlib.engine.runner import REHEARSE_HISTORY, build_model, build_terms

    def spn_of(profile: str):
        run = next(r for r in plan.build("spn", profile).runs()
                   if r.net == "EDSR-light" and any(t.name == "spn" for t in r.terms) and r.label.endswith("x4+SPN"))
        fb = FeatureBank("random", "full")
        model = build_model(run, fb)
        return dict(build_terms(run, model, fb, load_run=None))["spn"][1]

    assert REHEARSE_HISTORY == 1
    assert tuple(spn_of("rehearse").cfg.steps) == (100,)
    assert tuple(spn_of("full").cfg.steps) == (100, 500, 1000, 2000)
