"""Training equivalence with SPN's release: irlib's loop with the SPN term reproduces Aitical/MCLIR's own.

tests/fixtures/equivalence/mclir_spn_steps.json records what MCLIR's ``SRNegModel_Multi`` (its history "negative"
models built, mixed and EMA-updated by ``model_neg``, its Adam and MultiStepLR through BasicSR's
``update_learning_rate``, its L1 and ``PerceptualLoss`` negative term, driven by BasicSR's ``train.py`` loop) did
for 6 steps on fixed batches from irlib's initial EDSR-light x4 weights: per-step total loss, each logged term
(``l_pix``, ``l_neg``), rates, and checksums of the final weights of the network and of every history copy.

The full plan's EDSR-light x4+SPN run is turned into a trainer as the run store does
(:func:`irlib.engine.jobs.build_trainer`), with only sizes and run length changed: steps, batch, patch, the step
decay's milestone (step 4 of 6) and the history intervals (2, 3, 4, 5 instead of 100, 500, 1000, 2000, so every
copy is updated within the check). The VGG is the random one of ``FeatureBank(weights="random")`` in both.

Two variants, because the plan's SPN term follows the paper where the release differs (irlib.spn ``PAPER`` vs
``PUBLIC_CODE``; the release has no EDSR option file, so its keys are set to the run's values):

* ``paper`` — the run as planned: history copies start at θ (``init="paper"``); VGG19 relu1_1..relu5_1 weighted
  0.2 each. The release gives the same start with its ``neg_start: 0`` (``model_neg(net, 0)`` sets net = θ).
* ``release`` — the run's term with ``("preset", "public_code")``: copies start at 0.1·fresh + 0.9·θ
  (``init="release"``, the release's ``neg_start: 0.1``), VGG16 relu1_2/2_2/3_3 weighted 0.2/0.3/0.5 as its option
  file. The fresh networks are irlib's draws (``history_seed``), loaded into the release's negatives before it mixes
  them; irlib's copy i (interval ``steps[i]``) is the release's ``net_g_neg[N-1-i]``, which it updates every
  ``neg_iter[::-1][N-1-i] = neg_iter[i]`` steps.
"""
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from irlib import plan
from irlib.engine.features import FeatureBank
from irlib.engine.runner import build_model, build_terms
from irlib.spn import PAPER, PUBLIC_CODE, SPNLoss, history_seed
from test_training_equivalence import _batches, _build, _checksum_mismatches, _fit

SPN = json.loads((Path(__file__).parent / "fixtures" / "equivalence" / "mclir_spn_steps.json").read_text())
CFG = SPN["config"]
REC = SPN["recorded"]
VARIANTS = ("paper", "release")


def _planned():
    """The full SPN plan's EDSR-light x4+SPN run (Table 1), as planned."""
    runs = [r for r in plan.build("spn", "full").runs()
            if r.net == "EDSR-light" and dict(r.net_kw) == {"scale": 4} and r.label == "EDSR-light x4+SPN"]
    assert len(runs) == 1, "the full SPN plan has no single EDSR-light x4+SPN run"
    return runs[0]


def _plan_run(variant: str):
    """The planned run with only this check's sizes changed; ``variant="release"`` adds the term's
    ``("preset", "public_code")`` (the release's SPN settings)."""
    run = _planned()
    sched = dataclasses.replace(run.schedule, steps=CFG["steps"], batch=CFG["batch"], patch=CFG["side"],
                                milestones=tuple(CFG["milestones"]))
    l1, spn = run.terms
    kw = {**dict(spn.kw), "steps": tuple(CFG["hist"])}
    if variant == "release":
        kw["preset"] = "public_code"
    spn = dataclasses.replace(spn, kw=tuple(sorted(kw.items())))
    return run.replace(schedule=sched, terms=(l1, spn))


def _sr_batches() -> list[dict]:
    """The shared fixed batches; the x4 input is the top-left corner of each drawn ``lq``."""
    s = CFG["lq_side"]
    return [{"lq": b["lq"][..., :s, :s].contiguous(), "gt": b["gt"]} for b in _batches(SPN["batches"]["seed"], CFG)]


def _train(variant: str):
    run = _plan_run(variant)
    model, init, terms = _build(run, SPN["init"]["torch_seed"], FeatureBank(weights="random"))
    spn = terms["spn"][1]
    hist0 = {k: v.detach().clone().double() for k, v in spn.history.state_dict().items()}
    log, lrs, _ = _fit(run, model, terms, _sr_batches())
    return {"run": run, "init": init, "model": model, "log": log, "lrs": lrs, "spn": spn, "hist0": hist0,
            "terms": terms}


@pytest.fixture(scope="module", params=VARIANTS)
def trained(request):
    return request.param, _train(request.param)


def _copies(spn: SPNLoss, state: dict | None = None) -> list[dict[str, torch.Tensor]]:
    """History copy i's parameters by the network's names (from ``state``, default the current buffers)."""
    state = state if state is not None else spn.history.state_dict()
    n = len(spn.history.steps)
    return [{k[2:].replace("__", "."): v[i] for k, v in state.items() if k.startswith("p_")} for i in range(n)]


def test_the_check_drives_the_plans_recipe():
    """What the check keeps from the plan is the planned recipe: Adam (0.9, 0.999), step decay x0.5, L1, and the
    SPN term L1 - lam * L_neg with lam 1e-4, w 0.1, four history copies, paper settings."""
    planned = _planned()
    s = planned.schedule
    assert (s.optimizer, s.lr, s.betas, s.weight_decay, s.decay, s.gamma, s.ema, s.grad_clip) == (
        "adam", CFG["lr"], (0.9, 0.999), 0.0, "step", 0.5, None, None)
    assert s.milestones == (200_000,) and s.steps == 300_000 and s.patch == 192 and s.rec == "l1"
    (l1, spn) = planned.terms
    assert (l1.name, l1.weight) == ("l1", 1.0)
    kw = dict(spn.kw)
    assert spn.name == "spn" and spn.weight == -kw["lam"] == -CFG["lam"] and kw["w"] == CFG["w"]
    assert kw["steps"] == (100, 500, 1000, 2000) and len(CFG["hist"]) == len(kw["steps"]) == CFG["n_history"]
    assert "preset" not in kw and PAPER.init == "paper"        # the plan trains SPN as the paper states it
    opts = SPN["driven"]["options"]
    assert opts["train"]["perceptual_opt"]["perceptual_weight"] == CFG["lam"] and opts["train"]["neg_decay"] == [
        CFG["w"]] * CFG["n_history"]
    assert opts["train"]["optim_g"]["lr"] == s.lr and opts["train"]["optim_g"]["betas"] == list(s.betas)
    assert opts["train"]["scheduler"]["gamma"] == s.gamma
    # the check's own sizes: the rate halves at step 4 and every copy is updated before the last step
    assert CFG["milestones"][0] < CFG["steps"] and max(CFG["hist"]) < CFG["steps"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_spn_settings_are_the_releases_variant_options(variant):
    """Each variant's irlib SPN settings are what its release options say: VGG, layers, weights, start mix."""
    run = _plan_run(variant)
    torch.manual_seed(0)
    fb = FeatureBank(weights="random")
    model = build_model(run, fb)
    spn = build_terms(run, model, fb=fb, load_run=None)["spn"][1]
    rel = SPN["driven"]["variants"][variant]
    cfg = spn.cfg
    assert dict(zip(cfg.layers, cfg.layer_weights)) == rel["layer_weights"] and cfg.arch == rel["vgg_type"]
    assert (cfg.lam, cfg.w, list(cfg.steps)) == (CFG["lam"], CFG["w"], CFG["hist"])
    assert cfg.init == ("paper" if variant == "paper" else "release")
    # the paper preset also copies buffers into a due copy, the release blends parameters only: for EDSR the one
    # buffer is the constant RGB mean (outside the state dict), so both do the same here
    assert cfg.update_buffers is (variant == "paper") and [n for n, _ in model.named_buffers()] == ["mean"]
    if variant == "release":
        assert cfg.init_mix == rel["neg_start"] and cfg == dataclasses.replace(
            PUBLIC_CODE, lam=CFG["lam"], steps=tuple(CFG["hist"]), w=CFG["w"])
    # the VGG both sides used: FeatureBank's random VGG, recorded by its tensors' sums
    feats = fb.vgg(cfg.arch, cfg.layers).features.state_dict()
    assert set(feats) == set(REC[variant]["vgg_checksum"])
    for k, v in feats.items():
        assert abs(float(v.double().sum()) - REC[variant]["vgg_checksum"][k]) <= 1e-9 * float(v.abs().sum()), k


def test_initial_history_copies_are_the_releases(trained):
    """Each copy's start against θ: zero for the paper variant (the release's neg_start 0); 0.1·(fresh - θ) for the
    release variant, with fresh = the network ``history_seed`` draws (the one loaded into the release's negative)."""
    variant, t = trained
    copies = _copies(t["spn"], t["hist0"])
    ref = REC[variant]["history_init_checksums"]
    for i, c in enumerate(copies):
        bad = _checksum_mismatches(c, t["init"], ref[str(i)])
        assert not bad, "\n".join(bad[:20])
        if variant == "paper":
            assert all(torch.equal(c[k], t["init"][k]) for k in c)
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(history_seed(t["run"].seed, i))
                fresh = build_model(t["run"], FeatureBank(weights="random")).state_dict()
            for k in c:
                torch.testing.assert_close(c[k], 0.1 * fresh[k].double() + 0.9 * t["init"][k], rtol=1e-6, atol=1e-7)


def test_learning_rates_match_the_release(trained):
    variant, t = trained
    np.testing.assert_allclose(t["lrs"], REC[variant]["lrs"], rtol=1e-12, atol=0)
    assert t["lrs"] == [CFG["lr"]] * CFG["milestones"][0] + [CFG["lr"] / 2] * (CFG["steps"] - CFG["milestones"][0])


def test_losses_and_terms_match_the_release(trained):
    """Per step: the total, L1 (the release's l_pix) and the SPN term (its l_neg = lam * N * irlib's term)."""
    variant, t = trained
    log, rec = t["log"], REC[variant]
    np.testing.assert_allclose(log["loss"].to_numpy(), rec["losses"], rtol=1e-6)
    np.testing.assert_allclose(log["l1"].to_numpy(), rec["l_pix"], rtol=1e-6)
    neg = log["spn"].to_numpy() * CFG["lam"] * CFG["n_history"]
    np.testing.assert_allclose(neg, rec["l_neg"], rtol=1e-5, atol=1e-14)
    assert (neg[1:] > 0).all()
    if variant == "paper":   # every copy starts at θ: no negative term on the first step
        assert rec["l_neg"][0] == 0.0 and neg[0] == 0.0


def test_final_weights_match_the_release(trained):
    variant, t = trained
    bad = _checksum_mismatches(t["model"].state_dict(), t["init"], REC[variant]["checksums"])
    assert not bad, "\n".join(bad[:20])


def test_history_copies_match_the_release(trained):
    """Every copy's final parameters (after its EMA updates at steps divisible by its interval) match the
    release's negative for that interval. A copy's change is 0.9x the network's small fp32 change, blended by
    ``lerp_`` here and by ``mul_``/``add_`` in the release: its checksums agree to ~1e-5, hence rtol 5e-5."""
    variant, t = trained
    start = _copies(t["spn"], t["hist0"])
    for i, c in enumerate(_copies(t["spn"])):
        bad = _checksum_mismatches(c, start[i], REC[variant]["history_checksums"][str(i)], rtol=5e-5)
        assert not bad, f"copy {i}:\n" + "\n".join(bad[:20])
        moved = sum(float((c[k].double() - start[i][k]).abs().sum()) for k in c)
        assert moved > 0, f"copy {i} (every {CFG['hist'][i]} steps) was never updated within the check"


def test_the_weight_check_sees_the_spn_gradient():
    """The final-weight check is sensitive to the SPN term (lam 1e-4 beside L1): the same 6 steps with the term's
    weight 0 (its value and history updates unchanged) miss the release's checksums."""
    run = _plan_run("paper")
    l1, spn = run.terms
    run = run.replace(terms=(l1, dataclasses.replace(spn, weight=0.0)))
    model, init, terms = _build(run, SPN["init"]["torch_seed"], FeatureBank(weights="random"))
    log, _, _ = _fit(run, model, terms, _sr_batches())
    assert len(log) == CFG["steps"]
    np.testing.assert_allclose(log["l1"].to_numpy()[:1], REC["paper"]["l_pix"][:1], rtol=1e-6)   # same first step
    bad = _checksum_mismatches(model.state_dict(), init, REC["paper"]["checksums"])
    assert len(bad) > len(init), "the weights without the SPN gradient still match the release's"
