"""irlib.weights: the manifests in data_manifests/weights, verified atomic fetches from a local HTTP server,
strict loading of the fetched file, and cache-aware status for torchvision / Hugging Face entries."""
from __future__ import annotations

import functools
import hashlib
import http.server
import threading

import pytest
import torch
import yaml

from irlib import weights as W
from irlib.data.fetch import ChecksumError
from irlib.models.release import load_release
from irlib.models.swinir import SwinIR
from irlib.results import reference
from release_fixtures import load_keys, state_shapes

# manifest -> the release key fixture its network + args must reproduce
FIXTURE_OF = {"edsr_mx2": "edsr_mx2", "edsr_mx4": "edsr_mx4", "ffanet_its": "ffanet", "ffanet_ots": "ffanet",
              "msbdn_dff": "msbdn", **{f"swinir_{k}": f"swinir_{k}" for k in ("light_x2", "light_x4", "classical_x2", "classical_x4")},
              **{f"dehazeformer_{v}_{e}": f"dehazeformer_{v}" for v in "tsb" for e in ("indoor", "reside6k")}}


def test_every_manifest_is_valid_and_names_real_tables_and_networks():
    entries = W.list_weights()
    names = {m["name"] for m in entries}
    assert len(entries) >= 30 and set(FIXTURE_OF) <= names
    for want in ("nafnet_gopro_width32", "restormer_deraining", "iat_lol_v1", "griddehazenet_indoor", "idt_derain",
                 "efderain", "vgg19_imagenet", "vgg16_imagenet", "resnet50_imagenet", "inception_v3_imagenet",
                 "alexnet_lpips", "dinov2_vits14", "bert_base_uncased", "adm_256_uncond"):
        assert want in names
    ref = reference()
    rows = set(zip(ref.paper, ref.table, ref.method))
    settings = set(zip(ref.paper, ref.table, ref.method, ref.setting))
    for m in entries:
        assert m["kind"] in W.KINDS
        assert (m["url"] is not None) or m["manual"] or m["kind"] in ("timm", "huggingface"), m["name"]
        for use in m["used_by"]:
            key = (use["paper"], use["table"], use["method"])
            assert key in rows, (m["name"], key)
            if "setting" in use:
                assert (*key, use["setting"]) in settings, (m["name"], use)
        if "network" in m:
            assert callable(W.resolve_network(m)), m["name"]
    assert W.load_weight_manifest("adm_256_uncond")["url"].endswith("256x256_diffusion_uncond.pt")
    assert W.load_weight_manifest("vgg19_imagenet")["sha256_prefix"] == "dcbb9e9d"


@pytest.mark.parametrize("name", sorted(FIXTURE_OF))
def test_manifest_network_builds_the_release_state_dict(name):
    m = W.load_weight_manifest(name)
    fx = load_keys(FIXTURE_OF[name])
    with torch.device("meta"):
        net = W.resolve_network(m)(**m["args"])
    params, buffers = state_shapes(net)
    assert params == fx["params"] and buffers == fx["buffers"]


def test_unknown_and_invalid_manifests_are_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("IRLIB_WEIGHT_MANIFESTS", str(tmp_path))
    _manifest(tmp_path, "ok", url="http://127.0.0.1:9/x.pth")
    with pytest.raises(W.WeightsError, match="no weights manifest 'nope'.*known: ok"):
        W.load_weight_manifest("nope")
    _manifest(tmp_path, "badkind", kind="zip")
    with pytest.raises(W.WeightsError, match="kind 'zip'"):
        W.load_weight_manifest("badkind")
    _manifest(tmp_path, "nomanual", url=None, manual=None)
    with pytest.raises(W.WeightsError, match="'manual' must say"):
        W.load_weight_manifest("nomanual")
    _manifest(tmp_path, "badsha", sha256="abc")
    with pytest.raises(W.WeightsError, match="64 hex"):
        W.load_weight_manifest("badsha")


# ------------------------------------------------------------------ fetch from a local server

class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *a):
        pass


@pytest.fixture
def server(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(served)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _manifest(folder, name, **kw):
    m = {"name": name, "title": f"test weights {name}", "kind": "release checkpoint", "url": None, "filename": "w.pth",
         "sha256": None, "size": None, "manual": "ask the authors", "source": "tests", "used_by": [],
         "network": "irlib.models.swinir:SwinIR.tiny", "args": {"scale": 2}, "container": "params"}
    m.update(kw)
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(m))
    return m


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def checkpoint(server):
    served, base = server
    torch.manual_seed(0)
    net = SwinIR.tiny(2)
    path = served / "swinir_tiny.pth"
    torch.save({"params_ema": net.state_dict()}, path)
    return net, path, base


def _left_over(root, name) -> bool:
    partial = root / ".partial"
    return (root / name).exists() or (partial.exists() and any(partial.iterdir()))


def test_fetch_verifies_and_loads_strictly(tmp_path, monkeypatch, checkpoint):
    net, path, base = checkpoint
    mdir, root = tmp_path / "manifests", tmp_path / "weights"
    mdir.mkdir()
    monkeypatch.setenv("IRLIB_WEIGHT_MANIFESTS", str(mdir))
    _manifest(mdir, "good", url=f"{base}/{path.name}", filename=path.name, sha256=_sha(path), size=path.stat().st_size)
    assert W.weights_status("good", root)["state"] == "missing"
    got = W.fetch_weights("good", root)
    assert got == root / "good" / path.name and _sha(got) == _sha(path)
    assert W.weights_status("good", root) == {"state": "present", "where": str(got), "hint": ""}
    m = W.load_weight_manifest("good")
    loaded = load_release(W.resolve_network(m)(**m["args"]), got)
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in net.state_dict().items())
    assert not (root / ".partial").exists()


def test_corrupted_missing_and_unverified_downloads_leave_nothing(tmp_path, monkeypatch, checkpoint):
    _, path, base = checkpoint
    mdir, root = tmp_path / "manifests", tmp_path / "weights"
    mdir.mkdir()
    monkeypatch.setenv("IRLIB_WEIGHT_MANIFESTS", str(mdir))
    url = f"{base}/{path.name}"
    _manifest(mdir, "corrupt", url=url, filename=path.name, sha256="0" * 64)
    with pytest.raises(ChecksumError, match="does not match"):
        W.fetch_weights("corrupt", root)
    assert not _left_over(root, "corrupt")
    _manifest(mdir, "wrongsize", url=url, filename=path.name, sha256=_sha(path), size=12)
    with pytest.raises(ChecksumError, match="size"):
        W.fetch_weights("wrongsize", root)
    assert not _left_over(root, "wrongsize")
    _manifest(mdir, "badprefix", url=url, filename=path.name, sha256_prefix="ffffffff")
    with pytest.raises(ChecksumError, match="does not start with ffffffff"):
        W.fetch_weights("badprefix", root)
    assert not _left_over(root, "badprefix")
    _manifest(mdir, "goodprefix", url=url, filename=path.name, sha256_prefix=_sha(path)[:8])
    assert W.fetch_weights("goodprefix", root).is_file()
    _manifest(mdir, "gone", url=f"{base}/missing.pth", filename="missing.pth", sha256="0" * 64)
    with pytest.raises(W.WeightsError, match=r"weights gone: download of .*missing\.pth failed"):
        W.fetch_weights("gone", root)
    assert not _left_over(root, "gone")
    _manifest(mdir, "unpinned", url=url, filename=path.name)
    with pytest.raises(ChecksumError, match="no sha256"):
        W.fetch_weights("unpinned", root)
    assert not _left_over(root, "unpinned")
    got = W.fetch_weights("unpinned", root, allow_unverified=True)
    assert (root / "unpinned" / ".sha256").read_text().split()[0] == _sha(got)


def test_manual_entries_say_how_to_get_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("IRLIB_WEIGHT_MANIFESTS", str(tmp_path))
    _manifest(tmp_path, "drive", manual="Google Drive folder XYZ.")
    st = W.weights_status("drive", tmp_path / "w")
    assert st["state"] == "manual" and "Google Drive folder XYZ." in st["hint"] and st["where"] in st["hint"]
    with pytest.raises(W.WeightsError, match="cannot be downloaded by script: Google Drive folder XYZ."):
        W.fetch_weights("drive", tmp_path / "w")
    (tmp_path / "w" / "drive").mkdir(parents=True)
    (tmp_path / "w" / "drive" / "w.pth").write_bytes(b"x")
    assert W.weights_status("drive", tmp_path / "w")["state"] == "present"


def test_torchvision_entries_use_the_torch_hub_cache(tmp_path, monkeypatch, checkpoint):
    _, path, base = checkpoint
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    st = W.weights_status("vgg19_imagenet", tmp_path / "unused")
    assert st["state"] == "missing" and st["where"] == str(tmp_path / "torch" / "hub" / "checkpoints" / "vgg19-dcbb9e9d.pth")
    (tmp_path / "torch" / "hub" / "checkpoints").mkdir(parents=True)
    (tmp_path / "torch" / "hub" / "checkpoints" / "vgg19-dcbb9e9d.pth").write_bytes(b"fake")
    assert W.weights_status("vgg19_imagenet", tmp_path / "unused")["state"] == "present"
    # a fetch through torch.hub with the hash prefix in the manifest: good, then a wrong prefix
    mdir = tmp_path / "manifests"
    mdir.mkdir()
    monkeypatch.setenv("IRLIB_WEIGHT_MANIFESTS", str(mdir))
    prefix = _sha(path)[:8]
    _manifest(mdir, "tv", kind="torchvision", url=f"{base}/{path.name}", filename=f"tiny-{prefix}.pth", sha256_prefix=prefix)
    got = W.fetch_weights("tv", tmp_path / "unused")
    assert got == tmp_path / "torch" / "hub" / "checkpoints" / f"tiny-{prefix}.pth" and _sha(got) == _sha(path)
    _manifest(mdir, "tvbad", kind="torchvision", url=f"{base}/{path.name}", filename="tiny-00000000.pth", sha256_prefix="00000000")
    with pytest.raises(ChecksumError):
        W.fetch_weights("tvbad", tmp_path / "unused")
    assert sorted(p.name for p in got.parent.iterdir()) == sorted(["vgg19-dcbb9e9d.pth", got.name])


def test_hub_entries_use_the_hugging_face_cache_and_respect_offline_mode(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    m = W.load_weight_manifest("bert_base_uncased")
    st = W.weights_status("bert_base_uncased", tmp_path)
    assert st["state"] == "missing" and "HF_HUB_OFFLINE" in st["hint"]
    with pytest.raises(W.WeightsError, match="HF_HUB_OFFLINE is set"):
        W.fetch_weights("bert_base_uncased", tmp_path)
    snap = tmp_path / "hf" / "hub" / "models--bert-base-uncased" / "snapshots" / "0123abc"
    snap.mkdir(parents=True)
    for f in [m["filename"], *m["extra_files"][:-1]]:
        (snap / f).write_text("{}")
    assert W.weights_status("bert_base_uncased", tmp_path)["state"] == "missing"  # one file still lacks
    (snap / m["extra_files"][-1]).write_text("{}")
    assert W.weights_status("bert_base_uncased", tmp_path) == {"state": "present", "where": str(snap / m["filename"]), "hint": ""}
    assert W.fetch_weights("bert_base_uncased", tmp_path) == snap / m["filename"]  # cached: no network needed
    # HF_HUB_CACHE wins over HF_HOME; the timm entry lives under the timm/ organisation
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache2"))
    st = W.weights_status("dinov2_vits14", tmp_path)
    assert st["state"] == "missing" and "models--timm--vit_small_patch14_dinov2.lvd142m" in st["where"]
    dino = tmp_path / "cache2" / "models--timm--vit_small_patch14_dinov2.lvd142m" / "snapshots" / "x"
    dino.mkdir(parents=True)
    (dino / "model.safetensors").write_bytes(b"")
    assert W.weights_status("dinov2_vits14", tmp_path)["state"] == "present"
