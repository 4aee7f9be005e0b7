"""``python -m internvl_chat.chat``: one-shot and interactive chat on a tiny checkpoint the test writes."""
import io
import sys

import pytest
import torch
from chat_helpers import write_checkpoint
from PIL import Image

from internvl.data.chat_image import load_image
from internvl.models.conversation import image_prefix
from internvl_chat.chat import main

GREEDY = dict(max_new_tokens=6, do_sample=False)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    directory = tmp_path_factory.mktemp("ckpt")
    model, tokenizer = write_checkpoint(directory, "internlm2")
    images = []
    for i, size in enumerate([(112, 56), (56, 84)]):
        path = directory.parent / f"image{i}.png"
        Image.effect_noise(size, 40 + 30 * i).convert("RGB").save(path)
        images.append(str(path))
    return str(directory), model, tokenizer, images


def run_cli(*argv, stdin=""):
    out = io.StringIO()
    code = main(["--max-new-tokens", "6", "--max-num", "4", *argv], stdin=io.StringIO(stdin), out=out)
    return code, out.getvalue()


def test_one_shot_answer_equals_model_chat(checkpoint):
    directory, model, tokenizer, images = checkpoint
    expected = model.chat(tokenizer, load_image(images[0], input_size=56, max_num=4), "What is it?", GREEDY)
    code, out = run_cli("--model", directory, "--image", images[0], "--question", "What is it?")
    assert code == 0 and out == expected + "\n"
    code, out = run_cli("--model", directory, "--image", images[0], "--question", "What is it?", "--no-stream")
    assert code == 0 and out == expected + "\n"
    system_message, model.system_message = model.system_message, "Answer in one word."
    try:
        expected = model.chat(tokenizer, None, "What is it?", GREEDY)
    finally:
        model.system_message = system_message
    code, out = run_cli("--model", directory, "--question", "What is it?", "--system-message", "Answer in one word.")
    assert code == 0 and out == expected + "\n"


def test_several_images_are_named_image_1_image_2(checkpoint):
    directory, model, tokenizer, images = checkpoint
    tiles = [load_image(path, input_size=56, max_num=4) for path in images]
    expected = model.chat(tokenizer, torch.cat(tiles), image_prefix(2) + "Compare them.", GREEDY,
                          num_patches_list=[len(t) for t in tiles])
    code, out = run_cli("--model", directory, "--image", images[0], "--image", images[1], "--question",
                        "Compare them.")
    assert code == 0 and out.strip() == expected


def test_interactive_chat_keeps_history_until_cleared(checkpoint):
    directory, model, tokenizer, images = checkpoint
    pixels = load_image(images[1], input_size=56, max_num=4)
    first, history = model.chat(tokenizer, pixels, "What is it?", GREEDY, return_history=True)
    second = model.chat(tokenizer, pixels, "Why?", GREEDY, history=history)
    fresh = model.chat(tokenizer, pixels, "Why?", GREEDY)
    code, out = run_cli("--model", directory, "--image", images[1],
                        stdin="What is it?\n\nWhy?\nclear\nWhy?\nexit\nnever asked\n")
    assert code == 0
    answers = [line.split("ASSISTANT: ", 1)[1] for line in out.splitlines() if "ASSISTANT: " in line]
    assert answers == [first, second, fresh]
    assert "(conversation cleared)" in out
    # end of input also ends the chat
    code, out = run_cli("--model", directory, stdin="Hello\n")
    assert code == 0 and out.count("ASSISTANT: ") == 1


def test_streaming_prints_while_generating(checkpoint, monkeypatch):
    """With streaming, answer text reaches the screen before the last decoding step runs; without, nothing does.

    The printing thread may lag behind generation, so before the last step the model waits (a few seconds at
    most) for text to appear: what the screen shows then does not depend on thread scheduling."""
    import time

    from internvl.models.internlm2 import InternLM2ForCausalLM

    directory = checkpoint[0]
    out, printed_at_step, wait_for_text = io.StringIO(), [], [False]
    forward = InternLM2ForCausalLM.forward

    def recording_forward(self, *args, **kwargs):
        if len(printed_at_step) == 5 and wait_for_text[0]:  # the 6th and last step of 6 new tokens
            deadline = time.monotonic() + 5
            while not out.getvalue() and time.monotonic() < deadline:
                time.sleep(0.01)
        printed_at_step.append(len(out.getvalue()))
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(InternLM2ForCausalLM, "forward", recording_forward)
    for flags, streamed in (((), True), (("--no-stream",), False)):
        out.seek(0), out.truncate(), printed_at_step.clear()
        wait_for_text[0] = streamed
        argv = ["--model", directory, "--question", "Hi", "--max-new-tokens", "6", *flags]
        assert main(argv, stdin=io.StringIO(), out=out) == 0
        assert len(printed_at_step) == 6 and out.getvalue().strip()
        assert printed_at_step == sorted(printed_at_step)
        assert (printed_at_step[-1] > 0) is streamed, (flags, printed_at_step, out.getvalue())


def test_errors_name_the_problem(checkpoint, tmp_path, capsys, monkeypatch):
    directory, _, _, images = checkpoint
    assert run_cli("--model", directory, "--image", str(tmp_path / "missing.jpg"), "--question", "x")[0] == 1
    assert "missing.jpg" in capsys.readouterr().err
    assert run_cli("--model", str(tmp_path / "nowhere"), "--question", "x")[0] == 1
    assert "nowhere" in capsys.readouterr().err
    assert run_cli("--model", directory, "--load-in-8bit", "--device", "cpu", "--question", "x")[0] == 1
    err = capsys.readouterr().err
    assert "pip install bitsandbytes" in err or "needs a CUDA device" in err
    monkeypatch.setitem(sys.modules, "decord", None)
    monkeypatch.setitem(sys.modules, "av", None)
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"\x00" * 16)
    assert run_cli("--model", directory, "--video", str(video), "--question", "x")[0] == 1
    assert "pip install av" in capsys.readouterr().err
    assert run_cli("--model", directory, "--image", images[0], "--question", "<image> and <image>")[0] == 1
    assert "2 '<image>' placeholder(s) but 1 image(s)" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse: --image and --video exclude each other
        run_cli("--model", directory, "--image", images[0], "--video", str(video))
    assert "not allowed with argument" in capsys.readouterr().err



def test_device_and_8bit_flags(checkpoint, capsys, monkeypatch):
    """The GPU-only flags: refused clearly without a GPU, and passed to from_pretrained as transformers wants."""
    import importlib.util

    from internvl.models.chat_model import InternVLChatModel
    from internvl_chat import chat

    directory = checkpoint[0]
    if not torch.cuda.is_available():
        assert run_cli("--model", directory, "--device", "cuda", "--question", "x")[0] == 1
        assert "--device cuda asked for, but no CUDA device is available" in capsys.readouterr().err
    assert run_cli("--model", directory, "--device", "tpu:x", "--question", "x")[0] == 1
    assert "--device 'tpu:x'" in capsys.readouterr().err
    seen = {}

    class Loaded:
        def eval(self):
            return self

    def fake_from_pretrained(path, **kwargs):
        seen.update(kwargs, path=path)
        return Loaded()

    monkeypatch.setattr(InternVLChatModel, "from_pretrained", fake_from_pretrained)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "bitsandbytes" else None)
    chat.load_checkpoint(directory, torch.device("cuda", 1), torch.float16, load_in_8bit=True)
    assert seen["quantization_config"].load_in_8bit and seen["device_map"] == {"": 1}
    assert seen["dtype"] is torch.float16 and seen["path"] == directory


def test_tiles_per_image_default_to_the_checkpoints_training_setting(checkpoint, tmp_path):
    """--max-num unset: the checkpoint's max_dynamic_patch (upstream's CLI asked again, 12 against training's own);
    given, it overrides; a checkpoint trained without dynamic tiling gets one tile. The caption evaluation reads it
    the same way."""
    from internvl_chat import evaluate_caption
    from internvl_chat.chat import load_media
    from internvl_chat.loading import max_tiles

    _, model, _, _ = checkpoint
    wide = tmp_path / "wide.png"
    Image.effect_noise((336, 56), 40).convert("RGB").save(wide)  # 6:1, six 56 px tiles when allowed
    config = model.config
    saved = (config.max_dynamic_patch, config.dynamic_image_size)
    try:
        config.max_dynamic_patch, config.dynamic_image_size = 2, True
        assert len(load_media(model, [str(wide)], None, None, 8)[0]) == 2 + 1  # 2x1 tiles and the thumbnail
        assert len(load_media(model, [str(wide)], None, 6, 8)[0]) == 6 + 1
        config.dynamic_image_size = False
        assert len(load_media(model, [str(wide)], None, None, 8)[0]) == 1
        assert max_tiles(config, 3) == 3
    finally:
        config.max_dynamic_patch, config.dynamic_image_size = saved
    assert evaluate_caption.parse_args(["--checkpoint", "x", "--datasets", "coco"]).max_num is None
