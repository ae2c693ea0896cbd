"""Dataset splits declared once in data_manifests/*.yaml: templates, pairing, errors, synth."""
import numpy as np
import pytest
import torch
from PIL import Image

from irlib.data import DatasetError
from irlib.data.splits import _template_regex, all_splits, get_split, load_split, split_files, synth


def _img(path, w, h, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)


def test_templates_pair_by_shared_fields():
    rx = _template_regex("indoor/hazy/{id:\\d+}_{k}")
    assert rx.match("indoor/hazy/1400_10").groupdict() == {"id": "1400", "k": "10"}
    assert rx.match("indoor/hazy/a_1") is None
    assert _template_regex("benchmark/Set14/LR_bicubic/X4/{id}x4").match("benchmark/Set14/LR_bicubic/X4/baboonx4")["id"] == "baboon"


def test_gopro_per_sequence_layout_pairs_across_sequences(tmp_path):
    for seq in ("GOPR0384_11_00", "GOPR0385_11_01"):
        for k in range(2):
            _img(tmp_path / f"gopro/test/{seq}/blur/{k:06d}.png", 20, 12, k)
            _img(tmp_path / f"gopro/test/{seq}/sharp/{k:06d}.png", 20, 12, 10 + k)
    pairs = split_files(tmp_path, "gopro:test")
    assert len(pairs) == 4
    for lq, gt in pairs:  # same sequence and frame on both sides
        assert lq.parts[-3] == gt.parts[-3] and lq.stem == gt.stem and lq.parent.name == "blur"


def test_many_to_one_and_sr_scale(tmp_path):
    for k in (1, 2):
        _img(tmp_path / f"ddn/test/rain/7_{k}.png", 16, 16)
    _img(tmp_path / "ddn/test/gt/7.png", 16, 16)
    assert [lq.name for lq, _ in split_files(tmp_path, "ddn:test")] == ["7_1.png", "7_2.png"]
    _img(tmp_path / "sr_benchmark/benchmark/Set14/HR/baboon.png", 32, 24)
    _img(tmp_path / "sr_benchmark/benchmark/Set14/LR_bicubic/X4/baboonx4.png", 8, 6)
    (lq, gt), = load_split(tmp_path, "sr_benchmark:Set14-x4")
    assert lq.shape == (3, 6, 8) and gt.shape == (3, 24, 32)
    _img(tmp_path / "sr_benchmark/benchmark/Set14/LR_bicubic/X4/baboonx4.png", 9, 6)
    with pytest.raises(DatasetError, match="size mismatch.*scale 4"):
        load_split(tmp_path, "sr_benchmark:Set14-x4")


def test_clear_errors_name_the_manifest(tmp_path):
    with pytest.raises(DatasetError, match=r"reside_sots.yaml declares no split 'indor'.*indoor"):
        get_split("reside_sots:indor")
    with pytest.raises(DatasetError, match="no manifest"):
        get_split("nosuchset:test")
    with pytest.raises(DatasetError, match="MANIFEST:SPLIT"):
        get_split("reside_sots")
    with pytest.raises(DatasetError, match="dataset folder .*reside_sots is missing.*manual download"):
        split_files(tmp_path, "reside_sots:indoor")
    _img(tmp_path / "reside_sots/indoor/hazy/1400_1.png", 8, 8)
    with pytest.raises(DatasetError, match="folder .*indoor/gt is missing"):
        split_files(tmp_path, "reside_sots:indoor")
    _img(tmp_path / "reside_sots/indoor/gt/1401.png", 8, 8)
    with pytest.raises(DatasetError, match=r"reside_sots:indoor: 1 degraded images have no ground truth.*1400_1.png"):
        split_files(tmp_path, "reside_sots:indoor")
    _img(tmp_path / "reside_sots/indoor/gt/1400.png", 8, 8)
    with pytest.raises(DatasetError, match="1 ground-truth images have no degraded partner.*1401.png"):
        split_files(tmp_path, "reside_sots:indoor")
    with pytest.raises(DatasetError, match="run `irlib data fetch cbsd68`"):
        split_files(tmp_path, "cbsd68:test")


def test_synth_writes_every_declared_layout(tmp_path):
    written = synth(tmp_path, n=2, side=64)
    assert {p.name for p in written} >= {"gopro", "div2k", "reside_sots", "cub", "sr_benchmark"}
    for sp in all_splits():
        if sp.kind != "images":
            continue
        data = load_split(tmp_path, sp.ref, dtype=torch.uint8)
        assert len(data) == 2, sp.ref
        lq, gt = data[0]
        assert gt.dtype == torch.uint8 and gt.shape == (3, 64, 64)
        if sp.paired:
            assert lq.shape == (3, 64 // sp.scale, 64 // sp.scale)
    from irlib.classify import load_cub

    items = load_cub(tmp_path / "cub")
    assert len(items) == 4 and {i.label for i in items} == {0, 1} and sum(not i.train for i in items) == 2


def test_synth_keeps_training_splits_at_full_side_and_shrinks_the_rest(tmp_path):
    synth(tmp_path, n=1, side=64, only=["div2k", "sr_benchmark", "rain100l"], test_side=48,
          train_refs={"div2k:train-x4", "rain100l:train"})
    assert load_split(tmp_path, "rain100l:train", dtype=torch.uint8)[0][1].shape == (3, 64, 64)
    assert load_split(tmp_path, "rain100l:test", dtype=torch.uint8)[0][1].shape == (3, 48, 48)
    lq, gt = load_split(tmp_path, "div2k:train-x4", dtype=torch.uint8)[0]
    assert gt.shape == (3, 64, 64) and lq.shape == (3, 16, 16)
    lq, gt = load_split(tmp_path, "sr_benchmark:Set14-x4", dtype=torch.uint8)[0]
    assert gt.shape == (3, 48, 48) and lq.shape == (3, 12, 12)


def test_big_training_sets_are_read_lazily_and_subsets_are_fixed(tmp_path, monkeypatch):
    from irlib.engine import runner
    from irlib.engine.spec import Source
    from irlib.schedules import Schedule

    synth(tmp_path, n=6, side=40, only=["reside_ots"])
    from irlib.data.splits import LazyPairs, subset_files

    files = split_files(tmp_path, "reside_ots:train")
    assert subset_files(files, 3) == subset_files(files, 3) and len(subset_files(files, 3)) == 3
    assert subset_files(files, 3, seed=1) != subset_files(files, 3) or len(files) == 3
    monkeypatch.setattr(runner, "EAGER_LIMIT", 2)   # pretend 6 images are too many to hold
    src = runner._one_source(Source("reside_ots:train", "haze", subset=4), str(tmp_path), Schedule(1, 2, 32, 1e-3), 0)
    assert isinstance(src.pairs, LazyPairs) and len(src.pairs) == 4
    b = src(0)
    assert b["lq"].shape == (2, 3, 32, 32) and b["lq"].dtype == torch.float32 and float(b["gt"].max()) <= 1
    with pytest.raises(DatasetError, match="smaller than the 48-pixel training patch"):
        runner._one_source(Source("reside_ots:train", "haze"), str(tmp_path), Schedule(1, 2, 48, 1e-3), 0)


def test_id_range_keeps_edsr_pytorchs_validation_images_only(tmp_path):
    """div2k:valid-x4 is DIV2K's 0801-0810 (EDSR-PyTorch --data_range 1-800/801-810), whatever else the folder holds."""
    from PIL import Image

    base = tmp_path / "div2k"
    for i in range(799, 813):
        for rel, side in ((f"DIV2K_valid_HR/{i:04d}", 16), (f"DIV2K_valid_LR_bicubic/X4/{i:04d}x4", 4)):
            (base / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (side, side)).save(base / f"{rel}.png")
    files = split_files(tmp_path, "div2k:valid-x4")
    assert [gt.stem for _, gt in files] == [f"{i:04d}" for i in range(801, 811)]
    assert all(lq.stem == gt.stem + "x4" for lq, gt in files)
    out = tmp_path / "synth"
    synth(out, n=2, side=32, only=["div2k"])
    assert sorted(p.stem for p in (out / "div2k" / "DIV2K_valid_HR").glob("*.png")) == ["0801", "0802"]
    assert len(load_split(out, "div2k:valid-x2")) == 2


def test_a_malformed_id_range_is_refused(tmp_path, monkeypatch):
    from irlib.data import splits

    (tmp_path / "m.yaml").write_text("name: m\nfiles: []\nsplits:\n  s:\n    gt: a/{id}\n    ids: ['0810', '0801']\n")
    monkeypatch.setattr(splits, "manifest_dir", lambda: tmp_path)
    splits._manifest.cache_clear()
    with pytest.raises(DatasetError, match="'ids' must be"):
        splits.get_split("m:s")
    splits._manifest.cache_clear()
