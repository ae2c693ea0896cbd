import pytest
import torch

from irlib import dinoir
from irlib.losses import ratio_contrastive
from irlib.models.restormer import TINY
from irlib.textprompt import TextEncoder, prompt_set, prompts_for


@pytest.fixture(scope="module")
def dino():
    torch.manual_seed(0)
    return dinoir.DINOFeatures(pretrained=False, tiny=True, img_size=28)


def test_dino_features_psf_and_fusion(dino):
    feats = dino(torch.rand(2, 3, 32, 32))
    assert [f.shape for f in feats] == [(2, 48, 2, 2)] * 3
    m = dinoir.DINOIR(dino, **TINY)
    y = m(torch.rand(2, 3, 16, 16))
    s = m.psf.last_scores
    assert y.shape == (2, 3, 16, 16) and torch.allclose(s.sum(1), torch.ones(2))
    y.mean().backward()
    assert m.fuse["enc1"].wq.weight.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in dino.parameters())


def test_dpc_is_the_ratio_of_l1_distances(dino):
    v, vp, vn = torch.rand(1, 3, 28, 28), torch.rand(1, 3, 28, 28), torch.rand(1, 3, 28, 28)
    got = dinoir.DPCLoss(dino, weights=(0.2, 0.3, 0.5))(v, {"gt": vp, "lq": vn})
    fo, fp, fn = dino(v), dino(vp), dino(vn)
    want = sum(w * (a - b).abs().mean() / (a - c).abs().mean() for w, a, b, c in zip((0.2, 0.3, 0.5), fo, fp, fn))
    assert float(got) == pytest.approx(float(want), rel=1e-5)
    assert float(ratio_contrastive([fp[0]], [fp[0]], [fn[0]], [1.0])) == 0.0


def test_plan_dpc_term_reads_the_shallow_blocks(dino):
    from irlib.papers import build
    from irlib.engine.features import FeatureBank
    from irlib.engine.runner import build_model, build_terms

    spec = next(r for r in build("dinoir", "smoke").runs() if r.net == "DINO-IR" and len(r.train) == 4
                and any(t.name == "dpc" for t in r.terms))
    fb = FeatureBank("random", "tiny")
    terms = build_terms(spec, build_model(spec, fb), fb, load_run=None)
    weight, dpc = terms["dpc"]
    assert weight == 1.0 and dpc.layers == dinoir.DPC_LAYERS == (0, 1, 2, 3) and dpc.weights == (0.25,) * 4
    assert dinoir.DPC_LAYERS_PSF == dinoir.DEFAULT_LAYERS
    with pytest.raises(ValueError, match="one weight per layer"):
        dinoir.DPCLoss(dino, weights=(0.5, 0.5))


def test_timm_local_weights_roundtrip(dino, tmp_path):
    f = tmp_path / "dino_tiny.pth"
    torch.save(dino.vit.state_dict(), f)
    again = dinoir.DINOFeatures(weights_file=str(f), tiny=True, img_size=28, pretrained=False)
    x = torch.rand(1, 3, 28, 28)
    assert torch.allclose(again(x)[-1], dino(x)[-1]) and again.pretrained


def test_prompt_set_and_split():
    ps = prompt_set()["prompts"]
    assert set(ps) == {"derain", "dehaze", "denoise", "deblur", "lowlight"}
    assert all(len(v) == 50 and len(set(v)) == 50 for v in ps.values())
    tr, te = prompts_for("rain", "train"), prompts_for("rain", "test")
    assert len(tr) == 40 and len(te) == 10 and not set(tr) & set(te)


def _tiny_bert(tmp_path):
    from transformers import BertConfig, BertModel, BertTokenizerFast

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "remove", "the", "rain", "haze", "noise"]
    tok = BertTokenizerFast(vocab={w: i for i, w in enumerate(words)})
    assert tok("remove the rain").input_ids == [2, 5, 6, 7, 3]
    torch.manual_seed(0)
    model = BertModel(BertConfig(vocab_size=10, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32))
    model.save_pretrained(tmp_path / "bert")
    tok.save_pretrained(tmp_path / "bert")
    return model, tok


def test_text_encoder_loads_saved_tiny_bert(tmp_path):
    model, tok = _tiny_bert(tmp_path)
    enc = TextEncoder(tmp_path / "bert")
    z = enc.encode(["remove the rain", "remove the haze"])
    assert z.shape == (2, 16) and enc.dim == 16
    ids = tok(["remove the rain"], return_tensors="pt")
    h = model.eval()(**ids).last_hidden_state
    assert torch.allclose(z[0], h[0].mean(0), atol=1e-5)  # mean pooling over tokens


def test_offline_minilm_separates_tasks():
    enc = TextEncoder()
    assert enc.dim == 384
    a, b, c = enc.encode(["Please remove the rain streaks from this photo.", "Get rid of the rain in the image.",
                          "Please brighten this photo."])
    cos = torch.nn.functional.cosine_similarity
    assert float(cos(a, b, dim=0)) > float(cos(a, c, dim=0))  # a real pretrained encoder, not random


def test_task_bert_finetuning_mlm_and_nsp(tmp_path):
    from irlib.textprompt import finetune_mlm

    _tiny_bert(tmp_path)
    data = {"derain": ["remove the rain", "the rain"], "dehaze": ["remove the haze", "the haze"], "denoise": ["remove the noise"]}
    losses = finetune_mlm(tmp_path / "bert", data, tmp_path / "tuned", steps=60, lr=3e-3, batch_size=32)
    assert len(losses) == 60 and sum(losses[-10:]) < 0.8 * sum(losses[:10])
    assert TextEncoder(tmp_path / "tuned").encode(["remove the rain"]).shape == (1, 16)
    with pytest.raises(ValueError, match="two tasks"):
        finetune_mlm(tmp_path / "bert", {"derain": ["the rain"]}, tmp_path / "x", steps=1, nsp=True)
