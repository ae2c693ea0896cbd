"""Image datasets: the offline sample set, paired folders, and deterministic patch batches."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from .degrade import degrade

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class DatasetError(RuntimeError):
    """A dataset is missing, incomplete or unreadable; the message says what to do."""


def to_tensor(img: np.ndarray) -> torch.Tensor:
    """HxWx3 uint8 (or HxW grey) array -> 3xHxW float tensor in [0, 1]."""
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    if img.shape[2] == 4:
        img = img[..., :3]
    return torch.from_numpy(np.array(img, copy=True)).permute(2, 0, 1).float() / 255.0


_CONVERTIBLE = ("RGB", "RGBA", "RGBX", "RGBa", "L", "LA", "La", "1", "P", "PA", "CMYK", "YCbCr")


def load_image(path: str | Path) -> torch.Tensor:
    """Read an image file as a 3xHxW float tensor in [0, 1] (8-bit levels), with a clear error naming the file
    when it cannot be decoded or its pixels cannot be read as colours.

    Grey, 1-bit, palette (with or without transparency), CMYK and YCbCr images become RGB; an alpha channel is
    dropped (as ``cv2.IMREAD_COLOR`` and ``.convert("RGB")`` in the releases do). 16-bit images keep their high
    byte: Pillow reads 16-bit RGB PNGs that way itself, and 16-bit grey (``I;16``) is scaled the same, where a plain
    ``convert("RGB")`` would clip every level above 255 to white. Float and 32-bit integer images (no agreed
    range) and other modes are refused."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            if mode.startswith("I;16") or (mode == "I" and im.format == "PNG"):   # 16-bit grey
                grey = np.asarray(im).astype(np.int64)
                if grey.min() < 0 or grey.max() > 65535:
                    raise DatasetError(f"cannot read image {path}: 16-bit grey with levels outside 0..65535")
                arr = (grey >> 8).astype(np.uint8)
            elif mode in _CONVERTIBLE:
                arr = np.asarray(im.convert("RGB"))
            else:
                raise DatasetError(
                    f"cannot read image {path}: pixel mode {mode!r} ({_MODE_NAMES.get(mode, 'not a colour image')}) "
                    f"has no agreed 0..1 range; convert it to an 8- or 16-bit RGB PNG")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DatasetError(f"cannot read image {path}: {e}. Re-download it (irlib data fetch) or remove it.") from e
    return to_tensor(arr)


_MODE_NAMES = {"F": "32-bit float pixels", "I": "32-bit integer pixels", "LAB": "CIELab colours",
               "HSV": "HSV colours"}


def save_image(x: torch.Tensor, path: str | Path) -> None:
    """Write a 3xHxW [0,1] tensor as an 8-bit PNG (atomically)."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = (x.detach().clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy())
    tmp = path.with_suffix(path.suffix + ".partial")
    Image.fromarray(arr).save(tmp, format="PNG")
    tmp.replace(path)


# --------------------------------------------------------------------------------------------------
# Offline natural photos
# --------------------------------------------------------------------------------------------------
SAMPLE_SOURCES = (
    "skimage:astronaut", "skimage:coffee", "skimage:chelsea", "skimage:rocket",
    "skimage:stereo_motorcycle", "skimage:immunohistochemistry", "sklearn:china.jpg",
    "sklearn:flower.jpg", "matplotlib:grace_hopper.jpg",
)


def _load_source(name: str) -> np.ndarray:
    lib, item = name.split(":", 1)
    if lib == "skimage":
        from skimage import data as skdata

        img = getattr(skdata, item)()
        if isinstance(img, tuple):  # stereo_motorcycle -> (left, right, disparity)
            img = img[0]
        return img
    if lib == "sklearn":
        from sklearn.datasets import load_sample_image

        return load_sample_image(item)
    if lib == "matplotlib":
        import matplotlib.cbook as cbook

        with cbook.get_sample_data(item) as f:
            from PIL import Image

            return np.asarray(Image.open(f).convert("RGB"))
    raise KeyError(name)


@lru_cache(maxsize=None)
def _sample_images(size: int) -> tuple[tuple[str, torch.Tensor], ...]:
    out = []
    for name in SAMPLE_SOURCES:
        x = to_tensor(_load_source(name))
        h, w = x.shape[-2:]
        s = min(h, w)
        x = x[:, (h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
        x = torch.nn.functional.interpolate(x[None], size=(size, size), mode="bicubic", antialias=True,
                                            align_corners=False)[0].clamp(0, 1)
        out.append((name, x))
    return tuple(out)


def sample_images(size: int = 128, names: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
    """The built-in offline photo set (scikit-image, scikit-learn, matplotlib), centre-cropped and resized.

    These are real natural photographs but *not* any paper's benchmark: results on them are pipeline
    checks only.
    """
    imgs = dict(_sample_images(int(size)))
    if names is not None:
        imgs = {k: imgs[k] for k in names}
    return {k: v.clone() for k, v in imgs.items()}


def split_samples(size: int = 128, n_test: int = 3) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Deterministic train/test split of the offline photos (last ``n_test`` held out)."""
    imgs = list(sample_images(size).values())
    return imgs[:-n_test], imgs[-n_test:]


# --------------------------------------------------------------------------------------------------
# Deterministic patch batches: batch(step) is a pure function of (seed, step), so training resumes exactly.
# --------------------------------------------------------------------------------------------------
def _step_generator(seed: int, step: int, rank: int = 0) -> torch.Generator:
    h = hashlib.sha256(f"{seed}:{step}:{rank}".encode()).digest()
    g = torch.Generator()
    g.manual_seed(int.from_bytes(h[:8], "little"))
    return g


def as_float(x: torch.Tensor) -> torch.Tensor:
    """Images may be kept as uint8 (a quarter of the memory of float32); crops become floats in [0, 1]."""
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x


def _crop_origin(img: torch.Tensor, patch: int, g: torch.Generator) -> tuple[int, int]:
    """Top-left corner of a random ``patch``x``patch`` crop of ``img`` (same draws for every batch source)."""
    h, w = img.shape[-2:]
    if h < patch or w < patch:
        raise DatasetError(f"image {h}x{w} is smaller than the training patch {patch}")
    return int(torch.randint(h - patch + 1, (1,), generator=g)), int(torch.randint(w - patch + 1, (1,), generator=g))


AUGMENTS = ("", "none", "hflip", "flips", "idt", "dihedral8", "dihedral7", "mprnet")
#: MPRNet's training draw (swz30/MPRNet dataset_RGB.py: ``random.randint(0, 8)``, nine cases) as the orientation
#: ``m`` of :func:`dihedral` each case gives: cases 0 and 8 leave the patch as it is, so the identity comes twice
#: as often as each of the other seven orientations.
MPRNET_CASES = (0, 5, 1, 2, 4, 6, 7, 3, 0)


def draw_augment(kind: str, g: torch.Generator) -> int:
    """The dihedral orientation ``m`` (0..7, see :func:`dihedral`) one sample gets under augmentation ``kind``:
    ``none`` 0; ``hflip`` 0 or 1 (EDSR-style horizontal flip only, DehazeFormer's only_h_flip); ``flips`` one of
    {0, 1, 4, 5} (independent horizontal and vertical flips); ``idt`` IDT's ``random.randint(0, 3)``: the
    identity with probability 1/2, a vertical or a horizontal flip with 1/4 each; ``dihedral8`` any of the 8 (flips and 90-degree
    rotations: EDSR-PyTorch, KAIR/BasicSR, NAFNet, FFA-Net, DehazeFormer); ``dihedral7`` any but the identity
    (PromptIR/TextPromptIR's ``random_augmentation``: ``random.randint(1, 7)``); ``mprnet`` MPRNet's nine-case
    draw (:data:`MPRNET_CASES`: the identity with probability 2/9, each other orientation 1/9)."""
    if kind == "none":
        return 0
    if kind == "hflip":
        return int(torch.randint(2, (1,), generator=g))
    if kind == "flips":
        return (0, 1, 4, 5)[int(torch.randint(4, (1,), generator=g))]
    if kind == "idt":
        return (0, 5, 1, 0)[int(torch.randint(4, (1,), generator=g))]
    if kind == "dihedral8":
        return int(torch.randint(8, (1,), generator=g))
    if kind == "dihedral7":
        return 1 + int(torch.randint(7, (1,), generator=g))
    if kind == "mprnet":
        return MPRNET_CASES[int(torch.randint(9, (1,), generator=g))]
    raise ValueError(f"augment must be one of {AUGMENTS[1:]}, got {kind!r}")


def dihedral(x: torch.Tensor, m: int) -> torch.Tensor:
    """Orientation ``m`` of a (..., H, W) image: a horizontal flip when ``m`` is odd, then ``m // 2`` quarter turns
    (``torch.rot90`` on the last two axes). ``m = 4`` is a half turn, so {0, 1, 4, 5} are the four flips."""
    if m & 1:
        x = x.flip(-1)
    return torch.rot90(x, m // 2, (-2, -1)) if m // 2 else x


@dataclass
class PatchBatches:
    """Random crops of clean images, degraded on the fly: ``batches(step) -> {'lq', 'gt', 'task'}``.

    ``tasks`` is a list of degradation names (see :func:`irlib.data.degrade.degrade`); each sample picks one.
    For SR tasks (``srx4``) the ``lq`` patch is ``patch / scale`` on a side.
    """

    images: Sequence[torch.Tensor]
    patch: int = 32
    batch_size: int = 4
    tasks: Sequence[str] = ("noise25",)
    seed: int = 0
    flip: bool = True
    rank: int = 0
    augment: str = ""        # one of AUGMENTS; "" = ``flip``'s original rule (random h and v flips)
    synth: str = ""          # "" float degradation, "uint8" on the 8-bit grid (see irlib.data.degrade.degrade)
    two_crops: bool = False  # also "lq_key": a second crop of the same image, degraded alike (AirNet's key)

    def _orient(self, ps: list[torch.Tensor], g: torch.Generator) -> list[torch.Tensor]:
        """One draw of the augmentation, applied alike to every patch in ``ps``."""
        if self.augment:
            m = draw_augment(self.augment, g)
            return [dihedral(p, m) for p in ps]
        if self.flip:
            if torch.rand((), generator=g) < 0.5:
                ps = [p.flip(-1) for p in ps]
            if torch.rand((), generator=g) < 0.5:
                ps = [p.flip(-2) for p in ps]
        return ps

    def __call__(self, step: int) -> dict:
        g = _step_generator(self.seed, step, self.rank)
        lq, gt, tasks, keys = [], [], [], []
        for _ in range(self.batch_size):
            img = self.images[int(torch.randint(len(self.images), (1,), generator=g))]
            i, j = _crop_origin(img, self.patch, g)
            ps = [as_float(img[:, i:i + self.patch, j:j + self.patch])]
            if self.two_crops:   # AirNet's release: two crops of the clean image, one augmentation for both
                i, j = _crop_origin(img, self.patch, g)
                ps.append(as_float(img[:, i:i + self.patch, j:j + self.patch]))
            ps = self._orient(ps, g)
            task = self.tasks[int(torch.randint(len(self.tasks), (1,), generator=g))]
            # one call degrades both crops: the same degradation parameters (noise level, blur width, haze
            # density), independent noise, as the release's Degradation.degrade(clean_patch_1, clean_patch_2)
            d = degrade(torch.stack(ps), task, g, synth=self.synth)
            lq.append(d[0])
            gt.append(ps[0])
            tasks.append(task)
            if self.two_crops:
                keys.append(d[1])
        out = {"lq": torch.stack(lq), "gt": torch.stack(gt), "task": tasks}
        if self.two_crops:
            out["lq_key"] = torch.stack(keys)
        return out


@dataclass
class PairedPatches:
    """Aligned random crops of real (lq, gt) pairs: ``batches(step)`` like :class:`PatchBatches`.

    ``scale`` is gt size / lq size (4 for x4 SR); ``patch`` is the gt patch size. ``task`` labels the batch
    (TextPromptIR picks its prompt from it)."""

    pairs: Sequence[tuple[torch.Tensor, torch.Tensor]]
    patch: int = 128
    batch_size: int = 8
    task: str = ""
    seed: int = 0
    scale: int = 1
    flip: bool = True
    rank: int = 0
    augment: str = ""        # one of AUGMENTS; "" = ``flip``'s original rule (a random horizontal flip)
    two_crops: bool = False  # also "lq_key": a second, independent crop of the same degraded image (AirNet's key)

    def _crop(self, a: torch.Tensor, b: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """An aligned random crop of the pair, augmented (one draw for both images)."""
        lp = self.patch // self.scale
        i, j = _crop_origin(a, lp, g)
        pa = as_float(a[:, i:i + lp, j:j + lp])
        pb = as_float(b[:, i * self.scale:(i + lp) * self.scale, j * self.scale:(j + lp) * self.scale])
        if self.augment:
            m = draw_augment(self.augment, g)
            pa, pb = dihedral(pa, m), dihedral(pb, m)
        elif self.flip and torch.rand((), generator=g) < 0.5:
            pa, pb = pa.flip(-1), pb.flip(-1)
        return pa, pb

    def __call__(self, step: int) -> dict:
        g = _step_generator(self.seed, step, self.rank)
        lq, gt, keys = [], [], []
        for _ in range(self.batch_size):
            a, b = self.pairs[int(torch.randint(len(self.pairs), (1,), generator=g))]
            pa, pb = self._crop(a, b, g)
            lq.append(pa)
            gt.append(pb)
            if self.two_crops:   # AirNet's release: a second crop with its own augmentation
                keys.append(self._crop(a, b, g)[0])
        out = {"lq": torch.stack(lq), "gt": torch.stack(gt), "task": [self.task] * self.batch_size}
        if self.two_crops:
            out["lq_key"] = torch.stack(keys)
        return out


def resize_center(img: torch.Tensor, side: int) -> torch.Tensor:
    """A (C,H,W) image squared to ``side`` as DiffLoss's release prepares every training and test image
    (guided-diffusion's ``center_crop_arr``): halve both sides with PIL's box filter while the short side is at
    least ``2*side``, resize with PIL's bicubic filter so the short side is ``side`` (each side
    ``round(side * length / short)``), then cut the centred ``side`` x ``side`` window (offsets rounded down).
    Works on the 8-bit grid; a float input in [0, 1] is rounded to it first, and the result keeps the input's
    dtype (uint8, or float in [0, 1])."""
    from PIL import Image

    if side < 1:
        raise ValueError(f"resize side must be positive, got {side}")
    u8 = img if img.dtype == torch.uint8 else (img.clamp(0, 1) * 255).round().to(torch.uint8)
    arr = u8.permute(1, 2, 0).numpy()
    pil = Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr)
    while min(pil.size) >= 2 * side:
        pil = pil.resize((pil.size[0] // 2, pil.size[1] // 2), resample=Image.BOX)
    scale = side / min(pil.size)
    pil = pil.resize((round(pil.size[0] * scale), round(pil.size[1] * scale)), resample=Image.BICUBIC)
    out = np.array(pil)
    out = out[..., None] if out.ndim == 2 else out
    top, left = (out.shape[0] - side) // 2, (out.shape[1] - side) // 2
    t = torch.from_numpy(np.ascontiguousarray(out[top:top + side, left:left + side])).permute(2, 0, 1).contiguous()
    return t if img.dtype == torch.uint8 else t.to(img.dtype) / 255


class ResizedPairs:
    """``[(lq or None, gt), …]`` with both images of each pair squared by :func:`resize_center` (computed on
    first use and kept: every training step then sees the same patch of an image, as the release's does)."""

    def __init__(self, pairs, side: int, scale: int = 1):
        if scale != 1:
            raise ValueError("resize_center training patches are for same-size pairs (not super-resolution)")
        self.pairs, self.side = pairs, side
        self._get = lru_cache(maxsize=1024)(self._load)   # ~400 MB of 256-px pairs; the rest are redone (ms each)

    def __len__(self) -> int:
        return len(self.pairs)

    def _load(self, i: int):
        lq, gt = self.pairs[i]
        return (None if lq is None else resize_center(lq, self.side)), resize_center(gt, self.side)

    def __getitem__(self, i: int):
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        return self._get(i % len(self))


def make_test_pairs(images: Sequence[torch.Tensor], task: str, seed: int = 1234,
                    synth: str = "") -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Fixed (lq, gt) test pairs: each clean image degraded once with a seed derived from its index
    (``synth`` as in :func:`irlib.data.degrade.degrade`)."""
    pairs = []
    for k, img in enumerate(images):
        g = _step_generator(seed, k)
        pairs.append((degrade(img[None], task, g, synth=synth)[0], img))
    return pairs


# --------------------------------------------------------------------------------------------------
# Paired folders (real benchmarks)
# --------------------------------------------------------------------------------------------------
class PairedFolder(torch.utils.data.Dataset):
    """Degraded/clean image pairs matched by file stem in two folders.

    Raises :class:`DatasetError` (before any training starts) when a folder is missing or empty, when
    a file has no partner, or — with ``check_sizes=True`` — when a pair's sizes disagree (``scale`` is
    the expected ground-truth/lq size ratio, e.g. 4 for x4 SR). ``match`` maps a lq stem to its gt stem
    for sets whose names differ (e.g. ``lambda s: s.split('_')[0]``).
    """

    def __init__(self, lq_dir: str | Path, gt_dir: str | Path, *, scale: int = 1, check_sizes: bool = True,
                 match: Callable[[str], str] | None = None, transform: Callable | None = None):
        self.lq_dir, self.gt_dir = Path(lq_dir), Path(gt_dir)
        for d in (self.lq_dir, self.gt_dir):
            if not d.is_dir():
                raise DatasetError(f"dataset folder {d} does not exist; fetch it with `irlib data fetch NAME` "
                                   f"or point data_root at it")
        lq = {p.stem: p for p in sorted(self.lq_dir.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}
        gt = {p.stem: p for p in sorted(self.gt_dir.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}
        if not lq or not gt:
            raise DatasetError(f"no images found in {self.lq_dir if not lq else self.gt_dir}")
        match = match or (lambda s: s)
        pairs, missing = [], []
        for stem, p in lq.items():
            q = gt.get(match(stem))
            (pairs.append((p, q)) if q is not None else missing.append(p.name))
        if missing:
            raise DatasetError(f"{len(missing)} degraded images have no clean partner in {self.gt_dir}: "
                               f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
        self.pairs, self.scale, self.transform = pairs, scale, transform
        if check_sizes:
            from PIL import Image

            for p, q in pairs:
                try:
                    with Image.open(p) as a, Image.open(q) as b:
                        sa, sb = a.size, b.size
                except OSError as e:
                    raise DatasetError(f"cannot read {p} or {q}: {e}") from e
                if (sa[0] * scale, sa[1] * scale) != sb:
                    raise DatasetError(f"size mismatch: {p.name} is {sa[0]}x{sa[1]}, {q.name} is {sb[0]}x{sb[1]} "
                                       f"(expected scale {scale})")

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> dict:
        p, q = self.pairs[i]
        item = {"lq": load_image(p), "gt": load_image(q), "name": p.stem}
        return self.transform(item) if self.transform else item


def synth_image(k: int, side: int, rng: np.random.Generator) -> np.ndarray:
    """A smooth, textured synthetic photo (gradients + blobs + a little noise), uint8 HxWx3."""
    y, x = np.mgrid[0:side, 0:side] / side
    img = np.stack([np.sin(2 * np.pi * (x * (k + 1) + y)), np.cos(2 * np.pi * (y * (k + 2) - x)), x * y], -1)
    for _ in range(6):
        cy, cx, r = rng.random(3) * [1, 1, 0.3]
        img += rng.normal(0, 0.6, 3) * np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * (0.05 + r) ** 2))[..., None]
    img = (img - img.min()) / (np.ptp(img) + 1e-8)
    img += rng.normal(0, 0.02, img.shape)
    return (img.clip(0, 1) * 255).astype(np.uint8)
