"""Chat fine-tuning flags that change the numbers reach them: --normalize_type and --pad2square the pixels of a
training item, --vision_select_layer the projector's input (and the saved config); estimate_length counts the
image tokens (upstream's group_by_length estimate)."""
import random

import pytest
import torch
from PIL import Image

from chat_finetune_helpers import DATA_FLAGS, base_checkpoint, training_tokenizer
from chat_finetune_helpers import _drop_run_logging  # noqa: F401 (autouse fixture)
from internvl.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from internvl_chat.arguments import parse_finetune_args
from internvl_chat.chat_data.build import data_options
from internvl_chat.chat_data.chat_jsonl import ChatSample, DatasetSpec
from internvl_chat.chat_data.dataset import NORMALIZATION, ChatDataset, estimate_length

RED = (200, 40, 40)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("chatflags")


def parsed(root, *flags):
    return parse_finetune_args(["--model_name_or_path", str(base_checkpoint(root)), "--conv_style", "internlm2-chat",
                                "--meta_path", "unused.json", "--output_dir", str(root / "out"), "--use_cpu", "True",
                                *DATA_FLAGS, *flags])


def item_pixels(root, image: Image.Image, *flags) -> torch.Tensor:
    """The pixel values of a one-image training item built with the given flags (options from the parsed flags)."""
    model_args, data_args, _ = parsed(root, *flags)
    path = root / f"image-{image.size[0]}x{image.size[1]}.png"
    image.save(path)
    sample = ChatSample("x.jsonl:1", [("human", "<image>\nWhat colour?"), ("gpt", "red")], images=[str(path)])
    spec = DatasetSpec(name="d", root=str(root), annotation=str(root / "x.jsonl"))
    dataset = ChatDataset(spec, [sample], training_tokenizer(root, "internlm2"), data_options(model_args, data_args))
    return dataset.build(sample, random.Random(0))["pixel_values"]


@pytest.mark.parametrize("normalize_type", sorted(NORMALIZATION))
def test_normalize_type_sets_the_pixel_normalisation(root, normalize_type):
    pixels = item_pixels(root, Image.new("RGB", (56, 56), RED), "--normalize_type", normalize_type)
    mean, std = NORMALIZATION[normalize_type]
    expected = torch.tensor([(c / 255 - m) / s for c, m, s in zip(RED, mean, std)])
    assert pixels.shape == (1, 3, 56, 56)
    torch.testing.assert_close(pixels[0].mean(dim=(1, 2)), expected, atol=1e-4, rtol=0)


def test_the_normalisations_differ_so_the_test_above_can_tell_them_apart():
    assert len({tuple(mean) + tuple(std) for mean, std in NORMALIZATION.values()}) == len(NORMALIZATION) > 1


def test_pad2square_pads_with_the_mean_colour_instead_of_stretching(root):
    wide = Image.new("RGB", (56, 28), RED)  # no dynamic tiling: one tile of the whole image
    stretched = item_pixels(root, wide)
    padded = item_pixels(root, wide, "--pad2square", "True")
    red = torch.tensor([(c / 255 - m) / s for c, m, s in zip(RED, IMAGENET_MEAN, IMAGENET_STD)])
    torch.testing.assert_close(stretched[0].mean(dim=(1, 2)), red, atol=1e-4, rtol=0)
    # padded: the 56x56 square holds the image in rows 14..41; above and below, the mean colour (about 0 once
    # normalised, up to the mean's rounding to whole pixel values)
    torch.testing.assert_close(padded[0, :, 20:36].mean(dim=(1, 2)), red, atol=1e-4, rtol=0)
    for band in (padded[0, :, :12], padded[0, :, 44:]):
        assert band.abs().max() < 0.02
    assert not torch.allclose(stretched, padded, atol=0.1)


def test_vision_select_layer_feeds_that_layer_to_the_projector_and_is_saved(root):
    from internvl_chat.chat_data.build import load_training_tokenizer
    from internvl_chat.finetune import build_model

    model_args, data_args, training_args = parsed(root, "--vision_select_layer", "-2", "--grad_checkpoint", "False")
    tokenizer, added = load_training_tokenizer(model_args.model_name_or_path, 512)
    model = build_model(model_args, data_args, training_args, tokenizer, added).eval()
    assert model.config.select_layer == -2 and model.select_layer == -2
    pixels = torch.randn(2, 3, 56, 56, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        hidden = model.vision_model(pixel_values=pixels, output_hidden_states=True, return_dict=True).hidden_states
        assert not torch.allclose(hidden[-2], hidden[-1], atol=1e-3)  # the two layers differ on these pixels
        side = 4
        layer = hidden[-2][:, 1:].reshape(2, side, side, -1)
        expected = model.mlp1(model.pixel_shuffle(layer, scale_factor=model.downsample_ratio).reshape(2, -1,
                                                                                                     layer.shape[-1] * 4))
        torch.testing.assert_close(model.extract_feature(pixels), expected, atol=1e-5, rtol=1e-5)
    model.config.save_pretrained(root / "saved")
    assert '"select_layer": -2' in (root / "saved" / "config.json").read_text()


def test_estimate_length_counts_the_image_tokens(root):
    """Upstream's estimate: text tokens of the turns joined by newlines + num_image_token x (max patches +
    thumbnail), added to every line (pure text included), unless the line gives its own length."""
    model_args, data_args, _ = parsed(root, "--dynamic_image_size", "True", "--use_thumbnail", "True",
                                         "--max_dynamic_patch", "6")
    options = data_options(model_args, data_args)
    tokenizer = training_tokenizer(root, "internlm2")
    turns = [("human", "<image>\nWhat colour is it?"), ("gpt", "red")]
    text = len(tokenizer("<image>\nWhat colour is it?\nred").input_ids)
    assert options.num_image_token == 4
    assert estimate_length(ChatSample("x:1", turns, images=["a.png"]), tokenizer, options, 6) == text + 4 * (6 + 1)
    assert estimate_length(ChatSample("x:1", turns, images=["a.png"]), tokenizer, options, 2) == text + 4 * (2 + 1)
    assert estimate_length(ChatSample("x:1", turns, length=77), tokenizer, options, 6) == 77
