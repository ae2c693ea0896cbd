import hashlib
import http.server
import io
import threading
import zipfile
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from irlib.data import (ChecksumError, DatasetError, PairedFolder, PatchBatches, degrade, fetch, load_manifest,
                        sample_images)


def test_offline_sample_set_is_real_photos():
    imgs = sample_images(48)
    assert len(imgs) >= 8
    for x in imgs.values():
        assert x.shape == (3, 48, 48) and 0 <= float(x.min()) and float(x.max()) <= 1
        assert float(x.std()) > 0.05  # not a flat placeholder


@pytest.mark.parametrize("task", ["noise25", "rain", "haze", "blur", "lowlight", "srx4"])
def test_degradations_seeded_and_plausible(task):
    x = sample_images(48)["skimage:coffee"][None]
    a, b = degrade(x, task, 7), degrade(x, task, 7)
    assert torch.equal(a, b)
    if task not in ("blur", "srx4"):
        assert not torch.equal(a, degrade(x, task, 8))
    if task == "srx4":
        assert a.shape[-1] == 12
    else:
        assert a.shape == x.shape and float((a - x).abs().mean()) > 1e-3
    if task == "noise25":
        assert float((a - x).std()) == pytest.approx(25 / 255, rel=0.1)


def test_patch_batches_are_a_function_of_step():
    imgs = list(sample_images(48).values())
    pb = PatchBatches(imgs, 16, 3, ("noise25", "rain"), seed=1)
    assert torch.equal(pb(5)["lq"], pb(5)["lq"]) and not torch.equal(pb(5)["lq"], pb(6)["lq"])


def _write(folder: Path, name: str, size=(16, 16)):
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (*size[::-1], 3), dtype=np.uint8)).save(folder / name)


def test_paired_folder_errors(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        PairedFolder(tmp_path / "lq", tmp_path / "gt")
    _write(tmp_path / "lq", "a.png"); _write(tmp_path / "gt", "a.png")
    _write(tmp_path / "lq", "b.png")
    with pytest.raises(DatasetError, match="no clean partner.*b.png"):
        PairedFolder(tmp_path / "lq", tmp_path / "gt")
    _write(tmp_path / "gt", "b.png", size=(20, 16))
    with pytest.raises(DatasetError, match="size mismatch"):
        PairedFolder(tmp_path / "lq", tmp_path / "gt")
    _write(tmp_path / "gt", "b.png")
    ds = PairedFolder(tmp_path / "lq", tmp_path / "gt")
    assert len(ds) == 2 and ds[0]["lq"].shape == (3, 16, 16)
    (tmp_path / "lq" / "b.png").write_bytes(b"not an image")
    with pytest.raises(DatasetError, match="cannot read"):
        PairedFolder(tmp_path / "lq", tmp_path / "gt", check_sizes=False)[1]


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "srv"
    root.mkdir()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("tiny/hazy/1.txt", "a")
        z.writestr("tiny/GT/1.txt", "b")
    (root / "good.zip").write_bytes(buf.getvalue())
    (root / "bad.zip").write_bytes(buf.getvalue()[:-40] + b"x" * 40)
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", hashlib.sha256(buf.getvalue()).hexdigest()
    httpd.shutdown()


def test_fetch_verifies_and_extracts_atomically(server, tmp_path):
    url, digest = server
    out = tmp_path / "data"
    m = {"name": "tiny", "files": [{"url": f"{url}/good.zip", "sha256": digest}]}
    target = fetch("tiny", out, manifest=m)
    assert (target / "tiny" / "hazy" / "1.txt").read_text() == "a"
    assert digest in (target / ".sha256").read_text()
    assert not (out / ".partial").exists()


def test_fetch_corrupted_or_unverified_leaves_nothing(server, tmp_path):
    url, digest = server
    out = tmp_path / "data"
    with pytest.raises(ChecksumError, match="does not match"):
        fetch("tiny", out, manifest={"name": "tiny", "files": [{"url": f"{url}/bad.zip", "sha256": digest}]})
    assert not (out / "tiny").exists() and not (out / ".partial").exists()
    with pytest.raises(ChecksumError, match="allow-unverified"):
        fetch("tiny", out, manifest={"name": "tiny", "files": [{"url": f"{url}/good.zip", "sha256": None}]})
    assert not (out / "tiny").exists()
    with pytest.raises(DatasetError, match="cannot extract"):
        fetch("tiny", out, allow_unverified=True, manifest={"name": "tiny", "files": [{"url": f"{url}/bad.zip"}]})
    assert list(out.iterdir()) == []
    with pytest.raises(DatasetError, match="download of"):
        fetch("tiny", out, manifest={"name": "tiny", "files": [{"url": f"{url}/missing.zip", "sha256": digest}]})


def test_manifests_cover_the_benchmarks():
    for name in ("div2k", "sr_benchmark", "cbsd68", "rain100l", "reside_sots", "dense_haze", "lol", "gopro", "cub"):
        m = load_manifest(name)
        assert m["files"] and m["splits"]
    with pytest.raises(DatasetError, match="cannot be downloaded by script"):
        fetch("lol", "/nonexistent-root")


def test_cli_fetch_reports_errors_and_succeeds(server, tmp_path, monkeypatch):
    import yaml

    from irlib.cli import main

    url, digest = server
    mdir = tmp_path / "manifests"
    mdir.mkdir()
    (mdir / "tiny.yaml").write_text(yaml.safe_dump({"name": "tiny", "files": [{"url": f"{url}/bad.zip", "sha256": digest}]}))
    (mdir / "good.yaml").write_text(yaml.safe_dump({"name": "good", "files": [{"url": f"{url}/good.zip", "sha256": digest}]}))
    monkeypatch.setenv("IRLIB_MANIFESTS", str(mdir))
    root = tmp_path / "data"
    assert main(["data", "fetch", "tiny", "--root", str(root)]) == 2
    assert not (root / "tiny").exists()
    assert main(["data", "fetch", "good", "--root", str(root)]) == 0
    assert (root / "good" / "tiny" / "GT" / "1.txt").is_file()
    assert main(["data", "fetch", "nope", "--root", str(root)]) == 2
