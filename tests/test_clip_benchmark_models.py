"""The internvl model type of clip_benchmark: upstream's six names on tiny checkpoints in both published formats,
the text conventions on a hand-made batch, the transforms, LoRA merging, image size, and bad checkpoints."""
import json

import pytest
import torch
from safetensors.torch import load_file
from torchvision import transforms as T

from internvl.datakit import SyntheticImages
from internvl.datakit.checkpoints import write_tiny_internvl_c_pth, write_tiny_internvl_cg
from internvl.errors import CheckpointError, ConfigError, MissingFileError
from internvl.models.internvl_cg import InternVLModel
from internvl_clip_benchmark.models import MODELS, load_internvl

KIT = SyntheticImages(num_classes=4, image_size=64)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """Upstream's pretrained/ layout, tiny: the HF directory and the .pth of the same InternVL-C weights."""
    root = tmp_path_factory.mktemp("pretrained")
    hf = write_tiny_internvl_cg(root / "InternVL-14B-224px")
    write_tiny_internvl_c_pth(root / "internvl_c_13b_224px.pth", model=InternVLModel.from_pretrained(hf))
    return root


def _images(size=64, n=3):
    # Not square: the two transforms differ only on such images.
    return [KIT.sample(i).image.resize((size + 16 * i, size)) for i in range(n)]


def test_pth_and_hf_give_the_same_internvl_c_features(pretrained):
    texts = ["a red circle", "一个蓝色的正方形", "a much longer caption about a yellow cross in the top left corner"]
    features = {}
    for name in ("internvl_c_retrieval", "internvl_c_retrieval_hf"):
        source = "internvl_c_13b_224px.pth" if name == "internvl_c_retrieval" else "InternVL-14B-224px"
        model, transform, tokenizer = load_internvl(name, pretrained / source)
        with torch.no_grad():
            features[name] = (model.encode_image(torch.stack([transform(im) for im in _images()])),
                              model.encode_text(tokenizer(texts)))
    for ours, reference in zip(features["internvl_c_retrieval"], features["internvl_c_retrieval_hf"]):
        torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)


def test_modes_and_transforms_follow_the_model_name(pretrained):
    hf = pretrained / "InternVL-14B-224px"
    reference = InternVLModel.from_pretrained(hf).eval()
    bicubic = T.InterpolationMode.BICUBIC
    normalize = [T.ToTensor(), T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))]
    upstream = {"retrieval": T.Compose([T.Resize((56, 56), interpolation=bicubic), *normalize]),
                "classification": T.Compose([T.Resize(56, interpolation=bicubic), T.CenterCrop(56), *normalize])}
    for name, spec in MODELS.items():
        if spec.source != "hf":
            continue
        model, transform, _ = load_internvl(name, hf)
        pixels = torch.stack([transform(im) for im in _images()])
        torch.testing.assert_close(pixels, torch.stack([upstream[spec.task](im) for im in _images()]))
        with torch.no_grad():
            torch.testing.assert_close(model.encode_image(pixels), reference.encode_image(pixels, mode=spec.mode))


def test_text_conventions_on_a_hand_made_batch(pretrained):
    """summarize: prefix, </s> appended, pad id 0 after it, trimmed to the longest, 80 tokens at most; the
    feature is read at </s>, so padding never changes it."""
    from transformers import LlamaTokenizer

    model, _, tokenizer = load_internvl("internvl_c_retrieval", pretrained / "internvl_c_13b_224px.pth")
    llama = LlamaTokenizer.from_pretrained(pretrained / "InternVL-14B-224px", legacy=True)
    texts = ["a red circle", "a blue square in the bottom right of the image", "word " * 200]
    ids = tokenizer(texts)
    for row, text in zip(ids, texts):
        expected = [1] + llama.encode("summarize:" + text, add_special_tokens=False)[:78] + [2]
        assert row[:len(expected)].tolist() == expected and not row[len(expected):].any()
    assert ids.shape == (3, 80) and ids[2, -1] == 2  # truncated to 80 with </s> kept last
    assert tokenizer(texts[:2]).shape[1] == (tokenizer(texts[:2]) > 0).sum(1).max()  # longest, not 80
    with torch.no_grad():
        batch = model.encode_text(tokenizer(texts[:2]))
        for i, text in enumerate(texts[:2]):
            alone = tokenizer([text])
            torch.testing.assert_close(batch[i], model.encode_text(alone)[0], rtol=1e-5, atol=1e-5)
            padded = torch.nn.functional.pad(alone, (0, 80 - alone.shape[1]))  # upstream's HF loader pads to 80
            torch.testing.assert_close(batch[i], model.encode_text(padded)[0], rtol=1e-5, atol=1e-5)


def test_the_text_feature_is_read_at_the_eos_token(pretrained):
    """The feature is QLLaMA's hidden state at </s> (upstream: index attention_mask.sum(1) - 1), projected: found
    here by looking for the </s> id in each row, not by counting the mask, for rows of different lengths, so
    reading one token early (or late, into the padding) fails."""
    model, _, tokenizer = load_internvl("internvl_c_retrieval_hf", pretrained / "InternVL-14B-224px")
    inner = model.model
    ids = tokenizer(["a red circle", "a blue square in the bottom right of the image", "green"])
    eos = 2  # LLaMA's </s>, appended to every text
    assert ids.shape[0] == 3 and len(set(((ids == eos).nonzero()[:, 1]).tolist())) == 3  # three EOS positions
    with torch.no_grad():
        features = model.encode_text(ids)
        hidden = inner.get_text_features(ids, (ids > 0).long())
    for row in range(3):
        (position,) = (ids[row] == eos).nonzero()[:, 0].tolist()
        at_eos = hidden[row, position] @ inner.text_projection
        torch.testing.assert_close(features[row], at_eos, rtol=1e-5, atol=1e-6)
        for wrong in (position - 1, position + 1):
            if 0 <= wrong < ids.shape[1]:
                assert (features[row] - hidden[row, wrong] @ inner.text_projection).abs().max() > 1e-3


def test_lora_adapters_are_merged_and_image_size_comes_from_the_config(tmp_path):
    directory = write_tiny_internvl_cg(tmp_path / "ft", use_backbone_lora=4, use_qllama_lora=4, force_image_size=70)
    saved = load_file(directory / "model.safetensors")
    model, transform, _ = load_internvl("internvl_g_retrieval_hf", directory)
    names = list(model.model.state_dict())
    assert not any("lora_" in n or "base_layer" in n for n in names) and not model.model.config.use_backbone_lora
    prefix = "vision_model.base_model.model.encoder.layers.0.attn.qkv."
    merged = saved[prefix + "base_layer.weight"] + 2 * saved[prefix + "lora_B.default.weight"] \
        @ saved[prefix + "lora_A.default.weight"]  # lora_alpha / r = 2
    torch.testing.assert_close(model.model.vision_model.encoder.layers[0].attn.qkv.weight, merged)
    qprefix = "qllama.base_model.model.model.layers.1.mlp.up_proj."
    torch.testing.assert_close(model.model.qllama.model.layers[1].mlp.up_proj.weight,
                               saved[qprefix + "base_layer.weight"]
                               + 2 * saved[qprefix + "lora_B.default.weight"] @ saved[qprefix + "lora_A.default.weight"])
    pixels = transform(_images()[1])
    assert pixels.shape == (3, 70, 70)
    assert model.encode_image(pixels[None]).shape == (1, 32)


@pytest.mark.parametrize("name, source, error, message", [
    ("internvl_d_retrieval", "internvl_c_13b_224px.pth", ConfigError,
     "is not an InternVL model name; with --model_type internvl use one of: internvl_c_classification, "
     "internvl_c_retrieval, internvl_c_classification_hf, internvl_c_retrieval_hf, internvl_g_classification_hf, "
     "internvl_g_retrieval_hf"),
    ("internvl_c_retrieval", "nothing.pth", MissingFileError, r"nothing\.pth does not exist.*pretrained/README\.md"),
    ("internvl_c_retrieval", "InternVL-14B-224px", CheckpointError,
     "reads the PyTorch file internvl_c_13b_224px.pth, but --pretrained .* is a directory; for an HF directory use "
     "internvl_c_retrieval_hf"),
    ("internvl_c_retrieval_hf", "internvl_c_13b_224px.pth", CheckpointError,
     "reads a Hugging Face directory .* is a file; for the PyTorch file use internvl_c_retrieval"),
    ("internvl_g_retrieval_hf", "internvl_c_13b_224px.pth", CheckpointError, "the .pth holds InternVL-C only"),
])
def test_wrong_names_and_paths(pretrained, name, source, error, message):
    with pytest.raises(error, match=message):
        load_internvl(name, pretrained / source)


def test_damaged_and_foreign_checkpoints(tmp_path, pretrained):
    garbage = tmp_path / "internvl_c_13b_224px.pth"
    garbage.write_bytes(b"this is not a checkpoint")
    with pytest.raises(CheckpointError, match=r"cannot read .*internvl_c_13b_224px\.pth as a PyTorch checkpoint"):
        load_internvl("internvl_c_classification", garbage, tokenizer_dir=pretrained / "InternVL-14B-224px")
    torch.save({"blocks.0.attn.qkv.weight": torch.zeros(3), "head.weight": torch.zeros(2)}, garbage)
    with pytest.raises(CheckpointError, match=r"cannot load .*\.pth as internvl_c_13b_224px\.pth .*unexpected tensors"):
        load_internvl("internvl_c_classification", garbage, tokenizer_dir=pretrained / "InternVL-14B-224px")
    with pytest.raises(MissingFileError, match=r"no LLaMA tokenizer for .*: looked for tokenizer\.model in .* and "
                                               r".*InternVL-14B-224px.*--tokenizer_dir"):
        load_internvl("internvl_c_classification", garbage)
    foreign = tmp_path / "InternViT-6B-224px"
    foreign.mkdir()
    (foreign / "config.json").write_text(json.dumps({"model_type": "intern_vit_6b"}))
    with pytest.raises(CheckpointError, match="has model_type 'intern_vit_6b', not 'internvl'"):
        load_internvl("internvl_c_retrieval_hf", foreign)
    c_only = write_tiny_internvl_cg(tmp_path / "c_only", num_query_token=0)
    with pytest.raises(CheckpointError, match="holds InternVL-C only .* use internvl_c_retrieval_hf"):
        load_internvl("internvl_g_retrieval_hf", c_only)
