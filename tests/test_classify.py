"""CUB loading, classifier fine-tuning and top-1 (DiffLoss Table 2), on a tiny CUB-layout folder."""
import pytest
import torch

from irlib import classify
from irlib.data import DatasetError, save_image

COLORS = [(0.9, 0.1, 0.1), (0.1, 0.8, 0.2), (0.1, 0.2, 0.9)]


def make_cub(root, n_per_class=4):
    base = root / "CUB_200_2011"
    lines, labels, split = [], [], []
    g = torch.Generator().manual_seed(0)
    iid = 0
    for c, rgb in enumerate(COLORS):
        for k in range(n_per_class):
            iid += 1
            rel = f"{c + 1:03d}.bird_{c}/img_{k}.png"
            img = torch.tensor(rgb).view(3, 1, 1) * (0.8 + 0.2 * torch.rand(1, 40, 52, generator=g))
            (base / "images" / rel).parent.mkdir(parents=True, exist_ok=True)
            save_image(img.clamp(0, 1), base / "images" / rel)
            lines.append(f"{iid} {rel}"), labels.append(f"{iid} {c + 1}"), split.append(f"{iid} {int(k < n_per_class - 1)}")
    for name, rows in (("images.txt", lines), ("image_class_labels.txt", labels), ("train_test_split.txt", split)):
        (base / name).write_text("\n".join(rows) + "\n")
    return base


def test_load_cub_parses_labels_and_split(tmp_path):
    make_cub(tmp_path)
    items = classify.load_cub(tmp_path)
    assert len(items) == 12 and {it.label for it in items} == {0, 1, 2}
    assert sum(it.train for it in items) == 9
    x, y = classify.load_batch(items[:2], size=32)
    assert x.shape == (2, 3, 32, 32) and y.tolist() == [0, 0] and 0 <= x.min() and x.max() <= 1


def test_load_cub_errors(tmp_path):
    with pytest.raises(DatasetError, match="irlib data fetch cub"):
        classify.load_cub(tmp_path)
    base = make_cub(tmp_path)
    (base / "images/001.bird_0/img_0.png").unlink()
    with pytest.raises(DatasetError, match="missing"):
        classify.load_cub(tmp_path)
    (base / "train_test_split.txt").write_text("1\n")
    with pytest.raises(DatasetError, match="expected"):
        classify.load_cub(tmp_path)


def test_finetune_learns_the_classes_and_checkpoint_is_reused(tmp_path):
    make_cub(tmp_path)
    items = classify.load_cub(tmp_path)
    x, y = classify.load_batch(items, size=32)
    torch.manual_seed(0)
    net = classify.make_classifier("resnet18", 3, pretrained=False)
    assert net.fc.out_features == 3
    assert classify.make_classifier("vgg11", 5, pretrained=False).classifier[-1].out_features == 5
    ckpt = tmp_path / "clf.pt"
    net = classify.finetune(net, x, y, epochs=60, batch=12, lr=0.02, ckpt=ckpt, progress=False)  # robust to thread count
    assert classify.top1(net, x, y) == 100.0
    again = classify.finetune(classify.make_classifier("resnet18", 3, pretrained=False), x, y, ckpt=ckpt, progress=False)
    assert torch.equal(again(x[:2]), net(x[:2]))  # loaded, not retrained
    assert classify.top1(net, x, (y + 1) % 3) == 0.0


def test_degrade_set_is_seeded_and_restore_pads_back():
    x = torch.rand(2, 3, 30, 34)
    a, b = classify.degrade_set(x, "haze", seed=3), classify.degrade_set(x, "haze", seed=3)
    assert torch.equal(a, b) and not torch.equal(a, x)
    out = classify.restore(torch.nn.Identity(), a, pad_to=16)
    assert out.shape == x.shape and torch.equal(out, a.clamp(0, 1))
