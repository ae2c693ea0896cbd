"""AirNet's release training in irlib's engine: the two-crop samplers (query and key crops of one degraded image),
the contrastive term, the step windows of its terms (scaled under the rehearsal's caps), and a tiny run through
build_model / build_terms / the trainer whose encoder-only steps leave the restorer untouched."""
import math

import pandas as pd
import pytest
import torch

from irlib import plan
from irlib.data import PairedPatches, PatchBatches
from irlib.data.datasets import _crop_origin, _step_generator, as_float
from irlib.data.degrade import degrade
from irlib.losses import LOSSES
from irlib.train import StepWeight


def _constant_images(n: int = 4, side: int = 40) -> list[torch.Tensor]:
    """Flat grey images, each its own level: two crops of one image have the same clean content."""
    return [torch.full((3, side, side), 0.2 + 0.15 * k) for k in range(n)]


def test_two_crops_of_clean_images_share_the_image_and_the_degradation():
    b = PatchBatches(_constant_images(), 16, 8, ("noise15", "noise50"), seed=1, two_crops=True)
    x = b(0)
    assert set(x) == {"lq", "lq_key", "gt", "task"} and x["lq"].shape == x["lq_key"].shape == x["gt"].shape
    for k, task in enumerate(x["task"]):
        sigma = int(task[5:]) / 255
        nq, nk = (x["lq"][k] - x["gt"][k]).flatten(), (x["lq_key"][k] - x["gt"][k]).flatten()   # same clean level
        assert nq.std().item() == pytest.approx(sigma, rel=0.15) and nk.std().item() == pytest.approx(sigma, rel=0.15)
        assert abs(torch.corrcoef(torch.stack([nq, nk]))[0, 1].item()) < 0.15   # independent noise, same level
    assert "lq_key" not in PatchBatches(_constant_images(), 16, 8, ("noise15",), seed=1)(0)


def test_two_crops_are_blurred_alike():
    """On white-noise images any crop has the same statistics, so the share of the pixel spread a blur keeps
    measures its width: query and key keep the same share (one width per sample), samples differ."""
    g = torch.Generator().manual_seed(0)
    imgs = [torch.rand(3, 200, 200, generator=g) for _ in range(2)]
    x = PatchBatches(imgs, 96, 8, ("blur",), seed=2, two_crops=True)(3)
    assert not torch.equal(x["lq"], x["lq_key"])
    kept_q = (x["lq"].std(dim=(1, 2, 3)) / x["gt"].std(dim=(1, 2, 3)))
    kept_k = x["lq_key"].std(dim=(1, 2, 3)) / (1 / math.sqrt(12))   # uniform noise: std 1/sqrt(12)
    assert torch.allclose(kept_q, kept_k, rtol=0.1)
    assert kept_q.max() / kept_q.min() > 1.15


def test_single_crop_batches_draw_as_before():
    """With ``two_crops`` off a batch is drawn exactly as the one-crop sampler always drew it (resumed and
    stored runs see the same data)."""
    imgs = [torch.rand(3, 30, 30, generator=torch.Generator().manual_seed(k)) for k in range(3)]
    b = PatchBatches(imgs, 12, 3, ("noise25", "blur"), seed=5)
    g = _step_generator(5, 7, 0)
    lq, gt = [], []
    for _ in range(3):
        img = imgs[int(torch.randint(3, (1,), generator=g))]
        i, j = _crop_origin(img, 12, g)
        p = as_float(img[:, i:i + 12, j:j + 12])
        if torch.rand((), generator=g) < 0.5:
            p = p.flip(-1)
        if torch.rand((), generator=g) < 0.5:
            p = p.flip(-2)
        task = ("noise25", "blur")[int(torch.randint(2, (1,), generator=g))]
        lq.append(degrade(p[None], task, g)[0])
        gt.append(p)
    x = b(7)
    assert torch.equal(x["lq"], torch.stack(lq)) and torch.equal(x["gt"], torch.stack(gt))


def _find(patch: torch.Tensor, img: torch.Tensor) -> bool:
    """Whether ``patch`` is a crop of ``img``, as is or horizontally flipped."""
    s = patch.shape[-1]
    for cand in (patch, patch.flip(-1)):
        for i in range(img.shape[-2] - s + 1):
            for j in range(img.shape[-1] - s + 1):
                if torch.equal(img[:, i:i + s, j:j + s], cand):
                    return True
    return False


def test_two_crops_of_real_pairs():
    g = torch.Generator().manual_seed(3)
    pairs = [(0.5 * gt, gt) for gt in (torch.rand(3, 20, 20, generator=g) for _ in range(2))]
    b = PairedPatches(pairs, 8, 4, task="rain", seed=0, two_crops=True)
    x = b(1)
    assert torch.equal(x["lq"], 0.5 * x["gt"])   # aligned crops of each pair
    differ = 0
    for k in range(4):
        owner = next(a for a, gt in pairs if _find(x["gt"][k], gt))
        assert _find(x["lq_key"][k], owner)        # the key is a crop of the same degraded image
        differ += not torch.equal(x["lq_key"][k], x["lq"][k])
    assert differ >= 3
    assert "lq_key" not in PairedPatches(pairs, 8, 4, seed=0)(1)


def test_contrastive_term_is_cross_entropy_on_the_positive():
    logits = torch.tensor([[3.0, 1.0, 0.0], [0.5, 2.0, -1.0]])
    batch = {"airnet_logits": logits, "airnet_labels": torch.zeros(2, dtype=torch.long)}
    want = -(logits.log_softmax(1)[:, 0]).mean()
    assert LOSSES["airnet_contrast"](None, batch).item() == pytest.approx(want.item(), rel=1e-6)
    with pytest.raises(KeyError, match="forward='airnet'"):
        LOSSES["airnet_contrast"](None, {})


def _airnet_spec(profile: str):
    return next(r for r in plan.build("dinoir", profile).runs() if r.net == "AirNet")


def test_term_windows_follow_the_plan_and_shrink_under_rehearsal_caps():
    from irlib.engine.runner import term_weight

    full, rehearse = _airnet_spec("full"), _airnet_spec("rehearse")
    t = {x.name: x for x in full.terms}
    assert term_weight(t["l1"], full) == StepWeight(((0, None), (40_000, 1.0)))
    assert term_weight(t["airnet_contrast"], full) == StepWeight(((0, 1.0), (40_000, 0.1)))
    # rehearsal: 2 steps of the planned 400K; the 40K-step encoder stage becomes ceil(2 * 0.1) = 1 step
    r = {x.name: x for x in rehearse.terms}
    assert term_weight(r["l1"], rehearse) == StepWeight(((0, None), (1, 1.0)))
    assert term_weight(r["airnet_contrast"], rehearse) == StepWeight(((0, 1.0), (1, 0.1)))


def test_the_planned_network_is_the_release_with_a_queue_for_six_types():
    from irlib.engine.features import FeatureBank
    from irlib.engine.runner import build_model

    m = build_model(_airnet_spec("full"), FeatureBank("random", "full"))
    assert m.E.E.K == 6 * 256 and m.E.E.queue.shape == (256, 6 * 256)
    assert sum(p.numel() for p in m.parameters() if p.requires_grad) == 7_610_377   # the release's fixture count


def test_tiny_airnet_trains_encoder_first_then_everything():
    """Three steps of the smoke plan's AirNet (encoder-only stage of 2 steps) through the engine: the encoder-only
    steps change the query encoder, the momentum encoder and the queue but leave the restorer's weights (and
    its Adam state) untouched; the joint step changes the restorer and its loss is L1 + 0.1 x contrastive."""
    from irlib.engine.features import FeatureBank
    from irlib.engine.jobs import build_trainer
    from irlib.engine.runner import (
        build_model,
        build_terms,
        effective_schedule,
        train_forward,
        training_batches,
    )

    spec = _airnet_spec("smoke")
    assert spec.forward == "airnet" and {t.name: t.get("from", t.get("until")) for t in spec.terms} == {
        "l1": 2, "airnet_contrast": 2}
    fb = FeatureBank("random", "tiny")
    sched = effective_schedule(spec)
    torch.manual_seed(0)
    model = build_model(spec, fb)
    terms = build_terms(spec, model, fb, load_run=None)
    batches = training_batches(spec.replace(train=(spec.train[0].__class__("offline", "noise25|blur"),)), "", sched)
    assert "lq_key" in batches(0)
    tr = build_trainer(sched, model, terms, batches, forward=train_forward(spec, fb), progress=False)

    def snap(m: torch.nn.Module) -> dict:
        return {k: v.detach().clone() for k, v in m.state_dict().items()}

    r0, q0, k0, queue0 = snap(model.R), snap(model.E.E.encoder_q), snap(model.E.E.encoder_k), model.E.E.queue.clone()
    tr.fit(2)
    assert all(torch.equal(r0[k], v) for k, v in model.R.state_dict().items())
    assert not any(p in tr.opt.state for p in model.R.parameters())   # no gradient reached it, as in the release
    assert any(not torch.equal(q0[k], v) for k, v in model.E.E.encoder_q.state_dict().items())
    assert any(not torch.equal(k0[k], v) for k, v in model.E.E.encoder_k.state_dict().items())
    assert not torch.equal(queue0, model.E.E.queue) and int(model.E.E.queue_ptr) == 2 * sched.batch
    tr.fit(3)
    changed = [k for k, v in model.R.state_dict().items() if not torch.equal(r0[k], v)]
    assert changed and "tail.0.weight" in changed
    log = pd.DataFrame(tr.log).set_index("step")
    assert log.l1.isna().tolist() == [True, True, False]
    assert log.loss.loc[1] == pytest.approx(log.airnet_contrast.loc[1], rel=1e-6)
    assert log.loss.loc[3] == pytest.approx(log.l1.loc[3] + 0.1 * log.airnet_contrast.loc[3], rel=1e-5)
    assert all(math.isfinite(v) for v in log.loss)
    # evaluation: the plain forward (encoder in eval mode, then the restorer) on one image
    with torch.no_grad():
        y = tr.eval_model()(torch.rand(1, 3, 32, 32))
    assert y.shape == (1, 3, 32, 32) and torch.isfinite(y).all()


def test_recipe_states_the_windows_and_the_piecewise_rate():
    from irlib.engine.recipe import recipe

    r = recipe(_airnet_spec("full"))
    assert r["rec_loss"] == "1*l1[0,1] from step 40000"
    assert r["extra_terms"] == "1*airnet_contrast (MoCo logits of two crops) until step 40000 then 0.1"
    assert r["lr_schedule"].startswith("piecewise from 0: 0.001 x1 per 1; from 1: 0.001 x0.1 per 60; from 101:")
    assert (r["lr_tick"], r["total_batch"], r["patch"], r["augment"]) == (400, 6, 128, r["augment"])
