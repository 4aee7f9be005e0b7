"""Conversation templates: full prompt strings written out by hand from the reference templates."""
import pytest

from internvl.models.conversation import get_conv_template, image_prefix, video_prefix

INTERNVL2_SYSTEM = "你是由上海人工智能实验室联合商汤科技开发的书生多模态大模型，英文名叫InternVL, 是一个有用无害的人工智能助手。"
INTERNVL2_5_SYSTEM = "你是书生·万象，英文名是InternVL，是由上海人工智能实验室、清华大学及多家合作单位联合开发的多模态大语言模型。"


def prompt(name, *messages, system=None):
    conv = get_conv_template(name)
    if system is not None:
        conv.set_system_message(system)
    for i, message in enumerate(messages):
        conv.append_message(conv.roles[i % 2], message)
    return conv.get_prompt()


SINGLE_TURN = {
    "internlm2-chat": ("<|im_start|>system\n" + INTERNVL2_SYSTEM + "<|im_end|>"
                       "<|im_start|>user\n<image>\nWhat is this?<|im_end|><|im_start|>assistant\n"),
    "Hermes-2": ("<|im_start|>system\n" + INTERNVL2_SYSTEM + "<|im_end|>"
                 "<|im_start|>user\n<image>\nWhat is this?<|im_end|><|im_start|>assistant\n"),
    "phi3-chat": ("<|system|>\n" + INTERNVL2_SYSTEM + "<|end|>"
                  "<|user|>\n<image>\nWhat is this?<|end|><|assistant|>\n"),
    "internvl2_5": ("<|im_start|>system\n" + INTERNVL2_5_SYSTEM + "<|im_end|>\n"
                    "<|im_start|>user\n<image>\nWhat is this?<|im_end|>\n<|im_start|>assistant\n"),
    "plain": "<image>\nWhat is this?\n",
}


@pytest.mark.parametrize("name", SINGLE_TURN)
def test_single_turn_prompt(name):
    assert prompt(name, "<image>\nWhat is this?", None) == SINGLE_TURN[name]


def test_multi_turn_prompts():
    assert prompt("internlm2-chat", "<image>\nA?", "B.", "C?", None) == (
        "<|im_start|>system\n" + INTERNVL2_SYSTEM + "<|im_end|>"
        "<|im_start|>user\n<image>\nA?<|im_end|><|im_start|>assistant\nB.<|im_end|>"
        "<|im_start|>user\nC?<|im_end|><|im_start|>assistant\n")
    assert prompt("phi3-chat", "A?", "B.", "C?", None) == (
        "<|system|>\n" + INTERNVL2_SYSTEM + "<|end|><|user|>\nA?<|end|><|assistant|>\nB.<|end|>"
        "<|user|>\nC?<|end|><|assistant|>\n")
    assert prompt("internvl2_5", "A?", "B.", "C?", None) == (
        "<|im_start|>system\n" + INTERNVL2_5_SYSTEM + "<|im_end|>\n<|im_start|>user\nA?<|im_end|>\n"
        "<|im_start|>assistant\nB.<|im_end|>\n<|im_start|>user\nC?<|im_end|>\n<|im_start|>assistant\n")
    # plain: no roles; the answer is followed by the same newline as the question
    assert prompt("plain", "<image>", "a red circle", "<image>", None) == "<image>\na red circle\n<image>\n"


def test_system_message_override_and_empty_answer_keeps_the_turn_open():
    assert prompt("Hermes-2", "Hi", None, system="Answer the questions.") == (
        "<|im_start|>system\nAnswer the questions.<|im_end|><|im_start|>user\nHi<|im_end|><|im_start|>assistant\n")
    # the reference tests the message's truthiness: "" behaves like None
    assert prompt("internvl2_5", "Hi", "") == prompt("internvl2_5", "Hi", None)


def test_stop_tokens_and_reference_metadata():
    assert get_conv_template("internlm2-chat").stop_token == "<|im_end|>"
    assert get_conv_template("internvl2_5").stop_token == "<|im_end|>"  # sep is "<|im_end|>\n"
    assert get_conv_template("phi3-chat").stop_token == "<|end|>"
    assert get_conv_template("plain").stop_token == ""
    assert get_conv_template("Hermes-2").stop_str == "<|endoftext|>"


def test_templates_are_copies():
    conv = get_conv_template("internlm2-chat")
    conv.append_message(conv.roles[0], "x")
    conv.system_message = "changed"
    fresh = get_conv_template("internlm2-chat")
    assert fresh.messages == [] and fresh.system_message == INTERNVL2_SYSTEM


def test_update_last_message_and_openai_messages():
    conv = get_conv_template("Hermes-2")
    conv.append_message(conv.roles[0], "Q")
    conv.append_message(conv.roles[1], None)
    conv.update_last_message("A")
    assert conv.get_prompt().endswith("<|im_start|>user\nQ<|im_end|><|im_start|>assistant\nA<|im_end|>")
    assert conv.to_openai_api_messages() == [{"role": "system", "content": INTERNVL2_SYSTEM},
                                             {"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]


def test_multi_image_and_video_prefixes():
    assert image_prefix(2) == "Image-1: <image>\nImage-2: <image>\n"
    assert video_prefix(3) == "Frame1: <image>\nFrame2: <image>\nFrame3: <image>\n"
    assert image_prefix(0) == video_prefix(0) == ""


def test_unknown_template_lists_the_registered_ones():
    with pytest.raises(KeyError, match="internlm2-chat"):
        get_conv_template("vicuna")
