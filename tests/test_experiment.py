import numpy as np
import pytest
import torch
from PIL import Image

from irlib import experiment as ex
from irlib.data import DatasetError, PairedPatches
from irlib.results import Results


def _img(path, size, seed):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)


@pytest.fixture
def data_root(tmp_path):
    for k in range(3):  # SOTS naming: <id>_<beta>.png -> <id>.png
        _img(tmp_path / "reside_sots/indoor/hazy" / f"14{k}_1.png", (40, 32), k)
        _img(tmp_path / "reside_sots/indoor/gt" / f"14{k}.png", (40, 32), 10 + k)
        _img(tmp_path / "cbsd68/CBSD68-dataset-master/CBSD68/original_png" / f"{k}.png", (33, 30), 20 + k)
    return tmp_path


def test_full_profile_reads_real_folders(data_root):
    full = ex.get_profile("full")
    pairs = ex.eval_pairs(full, "SOTS-indoor", "haze", data_root, [])
    assert len(pairs) == 3 and pairs[0][0].shape == (3, 32, 40)
    noisy = ex.eval_pairs(full, "CBSD68", "noise25", data_root, [])
    assert len(noisy) == 3 and not torch.equal(noisy[0][0], noisy[0][1])
    sr = ex.eval_pairs(full, "CBSD68", "srx4", data_root, [])
    assert sr[0][1].shape == (3, 28, 32) and sr[0][0].shape == (3, 7, 8)  # cropped to a multiple of the scale
    src = ex.train_data(full, "SOTS-indoor", data_root, [], task="haze")
    assert isinstance(src, PairedPatches)
    src.patch, src.batch_size = 16, 2
    b = src(0)
    assert b["lq"].shape == (2, 3, 16, 16) and b["task"] == ["haze", "haze"]


def test_missing_data_is_a_clear_error_and_skippable(tmp_path):
    full = ex.get_profile("full")
    with pytest.raises(DatasetError, match="irlib data fetch"):
        ex.eval_pairs(full, "Urban100", "noise25", tmp_path, [])
    with pytest.raises(DatasetError, match="does not exist"):
        ex.eval_pairs(full, "Rain100L", "rain", tmp_path, [])
    r = Results("spn", "full", "pretrained", tmp_path)
    with ex.skip_missing(r, "Table 4", "NAFNet+SPN"):
        ex.eval_pairs(full, "GoPro", "blur", tmp_path, [])
        raise AssertionError("not reached")
    assert r.rows[0]["table"] == "Table 4" and r.rows[0]["notes"].startswith("skipped:") and np.isnan(r.rows[0]["value"])
    assert ex.try_pairs(r, "Table 1", full, "Rain100L", "rain", tmp_path, []) is None
    assert r.rows[-1]["paper_dataset"] == "Rain100L" and r.rows[-1]["notes"].startswith("skipped:")
    with pytest.raises(ValueError, match="profile must be"):
        ex.get_profile("fast")


def test_enable_checkpoints_makes_notebook_reruns_resume(tmp_path):
    from irlib.losses import LOSSES
    from irlib.models.nafnet import NAFNet

    p = ex.get_profile("smoke")
    train, test = ex.offline_split(p)
    pairs = ex.test_set(test[:1], "noise25")

    def run():
        ex.enable_checkpoints(tmp_path)
        torch.manual_seed(0)
        out = [ex.train_eval(NAFNet(4, (1,)), {"l1": (1.0, LOSSES["l1"])}, train, ["noise25"], pairs, p, k, steps=4)
               for k in range(2)]
        ex.enable_checkpoints(None)
        return out

    first = run()
    assert sorted(x.name for x in tmp_path.iterdir()) == ["run-000-NAFNet", "run-001-NAFNet"]
    again = run()  # both runs load their final checkpoints instead of training again
    assert [tr.step for _, tr in again] == [4, 4] and len(again[0][1].log) == 4
    assert float(first[1][0].PSNR[0]) == pytest.approx(float(again[1][0].PSNR[0]), abs=1e-6)


def test_multi_task_data_mixes_real_pairs_and_synthetic(data_root):
    full = ex.get_profile("full")
    src = ex.multi_task_data(full, {"haze": "SOTS-indoor", "noise25": "CBSD68"}, data_root, [])
    assert isinstance(src, ex.MixedBatches) and len(src.sources) == 2
    for s_ in src.sources:
        s_.patch, s_.batch_size = 16, 2
    a, b = src(0), src(1)
    assert a["task"] == ["haze", "haze"] and b["task"] == ["noise25", "noise25"]
    assert torch.equal(src(2)["lq"], src(2)["lq"])  # deterministic per step
    smoke = ex.get_profile("smoke")
    imgs = [torch.rand(3, 40, 40)]
    assert ex.multi_task_data(smoke, {"haze": "SOTS-indoor"}, data_root, imgs) == imgs
