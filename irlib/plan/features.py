"""The frozen feature networks runs and studies share (VGG, DINOv2, the ADM UNet, the text encoder), built
once per process and per configuration.

``weights`` is ``pretrained`` (torchvision / timm / Hugging Face / OpenAI weights, or the local files given in
``files``) or ``random`` (smoke and rehearsal: same architectures, random initialisation, so the numbers are
pipeline checks). ``size`` ``tiny`` swaps DINOv2 and ADM for small random versions of the same code.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

_CACHE: dict[tuple, Any] = {}


@dataclass
class FeatureBank:
    weights: str = "pretrained"
    size: str = "full"
    device: str = "cpu"
    files: dict[str, str] = field(default_factory=dict)   # vgg19/vgg16/dinov2/adm -> local weight file
    cache: str = ""                                       # folder for derived encoders (task-specific BERT)

    @property
    def pretrained(self) -> bool:
        return self.weights == "pretrained"

    def _get(self, key: tuple, make) -> Any:
        full = (self.weights, self.size, self.device, tuple(sorted(self.files.items()))) + key
        if full not in _CACHE:
            _CACHE[full] = make()
        return _CACHE[full]

    def vgg(self, arch: str = "vgg19", layers: tuple[str, ...] = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")):
        from ..losses import VGGFeatures

        return self._get(("vgg", arch, tuple(layers)), lambda: VGGFeatures(
            arch, tuple(layers), pretrained=self.pretrained, weights_path=self.files.get(arch) if self.pretrained else None
        ).to(self.device))

    def dino(self, layers: tuple[int, ...] | None = None):
        from ..dinoir import DEFAULT_LAYERS, DINOFeatures

        tiny = self.size == "tiny"
        lay = tuple(layers or DEFAULT_LAYERS)
        return self._get(("dino", lay), lambda: DINOFeatures(
            layers=lay, pretrained=self.pretrained and not tiny, tiny=tiny, img_size=56 if tiny else 224,
            weights_file=self.files.get("dinov2") if self.pretrained else None).to(self.device))

    def adm(self):
        from .. import diffloss as dl

        def make():
            if self.size == "tiny":
                import torch

                torch.manual_seed(0)
                return dl.ADMUNet(dl.ADM_TINY).eval().requires_grad_(False).to(self.device)
            if self.pretrained:
                return dl.load_adm(self.files.get("adm") or dl.ADM_256_UNCOND_URL).to(self.device)
            import torch

            torch.manual_seed(0)
            return dl.ADMUNet(dl.ADM_256_UNCOND).eval().requires_grad_(False).to(self.device)

        return self._get(("adm",), make)

    def text(self, name: str = ""):
        """A :class:`irlib.textprompt.TextEncoder`: ``""`` is the offline MiniLM (the only real pretrained
        network the smoke profile has); a hub id or a folder written by ``save_pretrained`` otherwise."""
        from ..textprompt import TextEncoder

        return self._get(("text", name), lambda: TextEncoder(name or None, device=self.device))

    def text_dim(self, name: str = "") -> int:
        return self.text(name).dim
