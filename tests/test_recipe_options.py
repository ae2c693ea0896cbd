"""Recipe options that make a run follow its release: augmentation, noise synthesis, evaluation conventions."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from irlib.data.datasets import PairedPatches, _step_generator, dihedral, make_test_pairs
from irlib.engine import runner
from irlib.engine.runner import (dehazeformer_ssim_inputs, measure_under, tile_starts, tiled_forward,
                                 training_batches)
from irlib.engine.spec import EvalSpec, RunSpec, Source, Term
from irlib.engine.spec import TestSet as TSet
from irlib.metrics import psnr, ssim
from irlib.schedules import Schedule

FIX = Path(__file__).parent / "fixtures" / "recipes"


def _orientations(x: torch.Tensor) -> dict:
    return {dihedral(x, m).numpy().tobytes(): m for m in range(8)}


def _seen(batches, x: torch.Tensor, steps: int = 60, key: str = "gt") -> set[int]:
    table = _orientations(x)
    seen = set()
    for s in range(steps):
        for p in batches(s)[key]:
            seen.add(table[p.numpy().tobytes()])
    return seen


def test_dihedral_gives_eight_distinct_orientations():
    x = torch.arange(2 * 4 * 4, dtype=torch.float32).view(2, 4, 4)
    assert len(_orientations(x)) == 8
    assert torch.equal(dihedral(x, 1), x.flip(-1)) and torch.equal(dihedral(x, 4), x.flip(-1).flip(-2))


def test_paired_augmentation_all_eight_orientations_lq_and_gt_together():
    gt = torch.arange(3 * 8 * 8, dtype=torch.float32).view(3, 8, 8) / 200
    lq = gt[:, ::2, ::2].clone()
    seen = {}
    for aug in ("", "hflip", "idt", "dihedral8", "dihedral7"):
        b = PairedPatches([(lq, gt)], patch=8, batch_size=4, scale=2, seed=3, augment=aug)
        seen[aug] = _seen(b, gt)
        tl, tg = _orientations(lq), _orientations(gt)
        for s in range(10):   # lq and gt always share the orientation
            out = b(s)
            for a, c in zip(out["lq"], out["gt"]):
                assert tl[a.numpy().tobytes()] == tg[c.numpy().tobytes()]
    assert seen[""] == seen["hflip"] == {0, 1}       # irlib's original paired rule: horizontal flip only
    assert seen["dihedral8"] == set(range(8))
    assert seen["idt"] == {0, 1, 5}                  # IDT: none (1/2), vertical or horizontal flip
    assert seen["dihedral7"] == set(range(1, 8))     # TextPromptIR: random.randint(1, 7), never the identity


def test_mprnet_augmentation_follows_its_nine_case_draw():
    """MPRNet's dataset_RGB.py draws ``random.randint(0, 8)``: case 1 flips dim 1 (rows), 2 dim 2 (columns), 3-5
    turn by 1-3 quarter turns, 6 and 7 turn the row- / column-flipped patch once, 0 and 8 leave it. Each case, written
    here with torch ops on a CHW patch, is the orientation MPRNET_CASES names; draws follow 2/9 : 1/9 x 7."""
    from irlib.data.datasets import MPRNET_CASES, draw_augment

    x = torch.arange(3 * 5 * 5, dtype=torch.float32).view(3, 5, 5)
    release = [lambda t: t, lambda t: t.flip(1), lambda t: t.flip(2), lambda t: torch.rot90(t, 1, (1, 2)),
               lambda t: torch.rot90(t, 2, (1, 2)), lambda t: torch.rot90(t, 3, (1, 2)),
               lambda t: torch.rot90(t.flip(1), 1, (1, 2)), lambda t: torch.rot90(t.flip(2), 1, (1, 2)), lambda t: t]
    for case, op in enumerate(release):
        assert torch.equal(dihedral(x, MPRNET_CASES[case]), op(x)), case
    g = torch.Generator().manual_seed(0)
    counts = np.bincount([draw_augment("mprnet", g) for _ in range(9000)], minlength=8)
    assert abs(counts[0] - 2000) < 150 and all(abs(c - 1000) < 120 for c in counts[1:]), counts
    gt = torch.arange(3 * 8 * 8, dtype=torch.float32).view(3, 8, 8) / 200
    b = PairedPatches([(gt.clone(), gt)], patch=8, batch_size=4, scale=1, seed=3, augment="mprnet")
    assert _seen(b, gt) == set(range(8))
    with pytest.raises(ValueError):
        draw_augment("mprnet9", g)


def test_clean_augmentation_dihedral_through_the_plan_data_path():
    sched = Schedule(10, 4, 32, 1e-4)
    spec = RunSpec("t", "EDSR-light", (Source("offline", "noise25"),), (Term("l1"),), sched, augment="dihedral8")
    b = training_batches(spec, "", sched)
    assert b.augment == "dihedral8"
    img = torch.arange(3 * 32 * 32, dtype=torch.float32).view(3, 32, 32) / 3072
    b.images = [img]                  # one asymmetric image filling the patch: the orientation is readable
    assert _seen(b, img) == set(range(8))
    legacy = training_batches(spec.replace(augment=""), "", sched)
    legacy.images = [img]
    assert _seen(legacy, img) == {0, 1, 4, 5}


def test_noise_uint8_matches_the_release_formula():
    """PromptIR/TextPromptIR: ``np.clip(clean + randn * sigma, 0, 255).astype(np.uint8)``, same normal draws."""
    rng = np.random.default_rng(0)
    clean = rng.integers(0, 256, (3, 24, 24)).astype(np.uint8)
    x = torch.from_numpy(clean).float() / 255
    for sigma in (15, 25, 50):
        (lq, _), = make_test_pairs([x], f"noise{sigma}", seed=5, synth="uint8")
        n = torch.randn((1, 3, 24, 24), generator=_step_generator(5, 0))[0].double().numpy()
        ref = np.clip(clean.astype(np.float64) + n * sigma, 0, 255).astype(np.uint8)
        assert np.array_equal(np.round(lq.double().numpy() * 255).astype(np.uint8), ref)
        (old, _), = make_test_pairs([x], f"noise{sigma}", seed=5)
        assert float(old.min()) < 0 and float(old.max()) > 1       # the float rule leaves [0, 1]


def test_noise_uint8_through_the_plans_train_and_test_paths():
    ts = TSet("offline", "noise50", synth="uint8")
    for lq, _ in runner.test_pairs(ts, ""):
        v = lq * 255
        assert float(lq.min()) >= 0 and float(lq.max()) <= 1
        assert torch.allclose(v, v.round(), atol=1e-4)
    sched = Schedule(10, 4, 32, 1e-4)
    spec = RunSpec("t", "EDSR-light", (Source("offline", "noise50", synth="uint8"),), (Term("l1"),), sched)
    lq = training_batches(spec, "", sched)(0)["lq"]
    assert float(lq.min()) >= 0 and float(lq.max()) <= 1 and torch.allclose(lq * 255, (lq * 255).round(), atol=1e-4)


def test_new_recipe_options_keep_old_keys_at_their_defaults():
    sched = Schedule(10, 4, 32, 1e-4)
    spec = RunSpec("t", "EDSR-light", (Source("offline", "noise25"),), (Term("l1"),), sched)
    from irlib.engine.spec import canonical_json

    text = canonical_json(spec)
    assert "augment" not in text and "synth" not in text and "declared" not in text
    assert spec.replace(augment="dihedral8").key() != spec.key()
    assert spec.replace(declared=(("x", "y"),)).key() == spec.key()
    ev = EvalSpec(TSet("offline", "noise25"))
    assert "quantize" not in canonical_json(ev) and EvalSpec(ev.testset, quantize=True).key() != ev.key()


def test_quantized_evaluation_rounds_the_output():
    g = torch.Generator().manual_seed(1)
    gt = (torch.rand(1, 3, 40, 40, generator=g) * 255).round() / 255
    y = (gt + 0.01 * torch.randn(1, 3, 40, 40, generator=g)).clamp(0, 1)
    ts = TSet("offline", "srx4")
    q = measure_under(EvalSpec(ts, channel="y", crop=4, quantize=True), y, gt)
    f = measure_under(EvalSpec(ts, channel="y", crop=4), y, gt)
    yq = (y * 255).round() / 255
    assert torch.allclose(q["PSNR"], psnr(yq, gt, channel="y", crop_border=4))
    assert torch.allclose(q["SSIM"], ssim(yq, gt, channel="y", crop_border=4))
    assert not torch.allclose(q["PSNR"], f["PSNR"], atol=1e-4)


def test_dehazeformer_ssim_pools_by_the_release_ratio():
    g = torch.Generator().manual_seed(2)
    gt = torch.nn.functional.interpolate(torch.rand(1, 3, 23, 31, generator=g), size=(460, 620), mode="bilinear")
    y = (gt + 0.05 * torch.randn(1, 3, 460, 620, generator=g)).clamp(0, 1)
    a, b = dehazeformer_ssim_inputs(y, gt)
    assert a.shape[-2:] == (230, 310)          # SOTS: round(460 / 256) = 2
    assert torch.allclose(a[0, :, 0, 0], y[0, :, :2, :2].mean((1, 2)))
    ev = EvalSpec(TSet("offline", "haze"), ssim="dehazeformer")
    m, full = measure_under(ev, y, gt), measure_under(EvalSpec(ev.testset), y, gt)
    assert torch.allclose(m["SSIM"], ssim(a, b)) and float(m["SSIM"]) > float(full["SSIM"]) + 0.01
    assert torch.equal(m["PSNR"], full["PSNR"])
    small = torch.rand(1, 3, 300, 200)
    assert dehazeformer_ssim_inputs(small, small)[0].shape[-2:] == (300, 200)   # round(200/256) = 1


def test_tiled_forward_matches_idts_release_tiling():
    f = json.loads((FIX / "idt_tiles.json").read_text())
    x = torch.rand(1, 3, 150, 170, generator=torch.Generator().manual_seed(0))
    assert [(h, w) for h in tile_starts(150, 128, 20) for w in tile_starts(170, 128, 20)] == [tuple(s) for s in f["starts"]]
    y = tiled_forward(lambda t: t * 0.5 + t.mean(dim=(2, 3), keepdim=True) ** 2, x, 128, 20)
    assert float(y.double().sum()) == pytest.approx(f["sum"], rel=1e-6)
    for c, h, w, v in f["points"]:
        assert float(y[0, c, h, w]) == pytest.approx(v, abs=1e-6)
    whole = x * 0.5 + x.mean(dim=(2, 3), keepdim=True) ** 2
    assert not torch.allclose(y, whole, atol=1e-3)    # per-window statistics: tiling changes the result
    assert tile_starts(100, 128, 20) == [0] and tile_starts(128, 128, 20) == [0]


def test_skimage_ssim_matches_scikit_image():
    """PromptIR/TextPromptIR measure SSIM with ``skimage.metrics.structural_similarity`` at its defaults."""
    from skimage.metrics import structural_similarity

    from irlib.metrics import ssim_uniform

    g = torch.Generator().manual_seed(3)
    gt = torch.nn.functional.interpolate(torch.rand(1, 3, 9, 11, generator=g), size=(40, 52), mode="bilinear")
    y = (gt + 0.05 * torch.randn(1, 3, 40, 52, generator=g)).clamp(0, 1)
    ref = structural_similarity(gt[0].permute(1, 2, 0).double().numpy(), y[0].permute(1, 2, 0).double().numpy(),
                                data_range=1, channel_axis=2)
    assert float(ssim_uniform(y, gt)) == pytest.approx(ref, abs=1e-6)
    m = measure_under(EvalSpec(TSet("offline", "noise25"), ssim="skimage"), y, gt)
    assert float(m["SSIM"]) == pytest.approx(ref, abs=1e-6)
    assert abs(float(ssim(y, gt)) - ref) > 1e-3                     # the Gaussian-window SSIM is another number
