"""InternLM2Tokenizer over a tiny SentencePiece model with the published special tokens, and load_tokenizer."""
import json
import pickle

import pytest
import sentencepiece as spm

from internvl.compat import TRANSFORMERS_5
from internvl.errors import CheckpointError
from internvl.datakit import train_sentencepiece
from internvl.models.tokenization import InternLM2Tokenizer, load_tokenizer

# The special tokens of OpenGVLab/InternVL2-2B's tokenizer_config.json, in id order. The published ids are
# 92538..92552 (the SentencePiece vocabulary has 92544 pieces); here they follow the tiny model's pieces.
SPECIAL_TOKENS = ["<|plugin|>", "<|interpreter|>", "<|action_end|>", "<|action_start|>", "<|im_end|>",
                  "<|im_start|>", "<img>", "</img>", "<IMG_CONTEXT>", "<quad>", "</quad>", "<ref>", "</ref>",
                  "<box>", "</box>"]
ADDITIONAL = ["<|im_start|>", "<|im_end|>", "<|action_start|>", "<|action_end|>", "<|interpreter|>", "<|plugin|>",
              "<img>", "</img>", "<IMG_CONTEXT>", "<quad>", "</quad>", "<ref>", "</ref>", "<box>", "</box>"]


def _entry(content):
    return {"content": content, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False,
            "special": True}


def write_internlm2_tokenizer(directory, tokenizer_class="InternLM2Tokenizer") -> dict:
    """tokenizer.model (trained here) + a tokenizer_config.json laid out like the published one."""
    train_sentencepiece(directory, vocab_size=1000)
    size = spm.SentencePieceProcessor(model_file=str(directory / "tokenizer.model")).get_piece_size()
    decoder = {"0": _entry("<unk>"), "1": _entry("<s>"), "2": _entry("</s>")}
    decoder.update({str(size + i): _entry(token) for i, token in enumerate(SPECIAL_TOKENS)})
    config = {
        "add_bos_token": True, "add_eos_token": False, "added_tokens_decoder": decoder,
        "additional_special_tokens": ADDITIONAL,
        "auto_map": {"AutoTokenizer": ["tokenization_internlm2.InternLM2Tokenizer", None]},
        "bos_token": "<s>", "clean_up_tokenization_spaces": False, "eos_token": "</s>", "model_max_length": 8192,
        "pad_token": "</s>", "tokenizer_class": tokenizer_class, "unk_token": "<unk>",
    }
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    return config


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    directory = tmp_path_factory.mktemp("internlm2_tok")
    write_internlm2_tokenizer(directory)
    return directory


@pytest.fixture(scope="module")
def tok(ckpt):
    return load_tokenizer(ckpt)


@pytest.fixture(scope="module")
def sp(ckpt):
    return spm.SentencePieceProcessor(model_file=str(ckpt / "tokenizer.model"))


def test_special_tokens_are_single_ids_at_the_checkpoint_ids(tok, sp):
    assert type(tok) is InternLM2Tokenizer
    size = sp.get_piece_size()
    assert tok.vocab_size == size and len(tok) == size + len(SPECIAL_TOKENS)
    for i, token in enumerate(SPECIAL_TOKENS):
        assert tok.convert_tokens_to_ids(token) == size + i
        assert tok.encode(token, add_special_tokens=False) == [size + i]
        assert tok.convert_ids_to_tokens(size + i) == token
    assert (tok.bos_token_id, tok.eos_token_id, tok.unk_token_id, tok.pad_token_id) == (1, 2, 0, 2)
    assert set(ADDITIONAL) <= set(tok.all_special_tokens)


def test_encoding_is_sentencepiece_between_special_tokens_with_bos_and_no_eos(tok, sp):
    text = "a red circle on a striped background"
    assert tok.encode(text, add_special_tokens=False) == sp.encode(text)
    assert tok(text).input_ids == [1] + sp.encode(text)  # <s> prepended, no </s>
    prompt = ("<|im_start|>user\n<img><IMG_CONTEXT><IMG_CONTEXT></img>\n图中是什么形状？<|im_end|>\n"
              "<|im_start|>assistant\n")
    im_end, im_start, img, img_end, ctx = (tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS[4:9])
    expected = ([1, im_start] + sp.encode("user\n") + [img, ctx, ctx, img_end] + sp.encode("\n图中是什么形状？")
                + [im_end] + sp.encode("\n") + [im_start] + sp.encode("assistant\n"))
    assert tok(prompt).input_ids == expected
    with_eos = InternLM2Tokenizer.from_pretrained(tok.name_or_path, add_eos_token=True, add_bos_token=False)
    assert with_eos(text).input_ids == sp.encode(text) + [2]
    assert with_eos(text, return_special_tokens_mask=True).special_tokens_mask == [0] * len(sp.encode(text)) + [1]


@pytest.mark.parametrize("text", [
    "a blue square at the top left of a checkered background",
    "一只红色的圆形在条纹背景上",
    "縞模様の背景に赤い円があります",
    "鑫龘 — rare characters go through byte fallback ✓",
    "line one\nline two\ttabbed",
])
def test_plain_text_round_trips(tok, sp, text):
    ids = tok.encode(text, add_special_tokens=False)
    assert tok.unk_token_id not in ids
    assert tok.decode(ids) == text
    assert tok.decode([1] + ids, skip_special_tokens=True) == text


def test_decode_spacing_around_special_tokens_follows_the_reference(tok, sp):
    size = sp.get_piece_size()
    im_start, im_end, img = size + 5, size + 4, size + 6
    hello = sp.encode("Hello world")
    # a special token inside the SentencePiece vocabulary (<s>) gets a space before it when it opens the text
    assert tok.decode([1] + hello) == " <s>Hello world"
    # added special tokens are joined to the text around them with single spaces
    assert tok.decode([im_start] + hello + [im_end]) == "<|im_start|> Hello world <|im_end|>"
    assert tok.decode([im_start] + hello + [im_end], spaces_between_special_tokens=False) == (
        "<|im_start|>Hello world<|im_end|>")
    assert tok.decode([img] + hello, skip_special_tokens=True) == "Hello world"
    # the reference always applies the English clean-up when decoding
    assert tok.decode(sp.encode("it is red . is it ?")) == "it is red. is it?"
    assert tok.decode([]) == ""


def test_batch_padding_uses_eos_on_the_left(tok):
    texts = ["a red circle", "一只红色的圆形在条纹背景上, and a blue square below it"]
    batch = tok(texts, padding=True, padding_side="left", return_tensors="pt")
    short = batch.attention_mask[0]
    assert short[0] == 0 and batch.input_ids[0, 0] == 2 and batch.attention_mask[1].all()
    assert batch.input_ids[0, (short == 0).sum()] == 1  # the real row starts with <s> after the padding


def test_save_pretrained_writes_the_same_files_back(tok, ckpt, tmp_path):
    original = json.loads((ckpt / "tokenizer_config.json").read_text())
    tok.save_pretrained(tmp_path)
    assert {"tokenizer.model", "tokenizer_config.json", "special_tokens_map.json"} <= {
        p.name for p in tmp_path.iterdir()}
    assert (tmp_path / "tokenizer.model").read_bytes() == (ckpt / "tokenizer.model").read_bytes()
    written = json.loads((tmp_path / "tokenizer_config.json").read_text())
    for key, value in original.items():
        assert written[key] == value, key
    again = load_tokenizer(tmp_path)
    texts = ["<|im_start|>system\n你是一个助手<|im_end|><img><IMG_CONTEXT></img>", "plain text"]
    assert again(texts).input_ids == tok(texts).input_ids
    assert again.decode(again("<ref>x</ref><box>1</box>").input_ids) == tok.decode(tok("<ref>x</ref><box>1</box>")
                                                                                    .input_ids)


def test_saving_after_the_source_file_is_gone_writes_the_model_from_memory(ckpt, tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    for name in ("tokenizer.model", "tokenizer_config.json"):
        (source / name).write_bytes((ckpt / name).read_bytes())
    tok = load_tokenizer(source)
    (source / "tokenizer.model").unlink()
    tok.save_pretrained(tmp_path / "out")
    assert (tmp_path / "out" / "tokenizer.model").read_bytes() == (ckpt / "tokenizer.model").read_bytes()


def test_pickles_for_dataloader_workers(tok):
    clone = pickle.loads(pickle.dumps(tok))
    text = "<|im_start|>user\n一只红色的圆形<|im_end|>"
    assert clone(text).input_ids == tok(text).input_ids


def test_fast_class_name_auto_map_and_auto_tokenizer_give_this_class(tmp_path):
    from transformers import AutoTokenizer

    from internvl.models.internlm2 import register_internlm2

    write_internlm2_tokenizer(tmp_path, tokenizer_class="InternLM2TokenizerFast")
    assert type(load_tokenizer(tmp_path)) is InternLM2Tokenizer
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    del config["tokenizer_class"]  # only the remote-code map names the class
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    assert type(load_tokenizer(tmp_path)) is InternLM2Tokenizer
    register_internlm2()
    write_internlm2_tokenizer(tmp_path)
    # the config names remote code (auto_map); the registered class is used instead, without asking
    assert type(AutoTokenizer.from_pretrained(tmp_path)) is InternLM2Tokenizer


def test_qwen2_style_directory_goes_through_auto_tokenizer(tmp_path):
    from transformers import Qwen2Tokenizer, Qwen2TokenizerFast
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    vocab = {c: i for i, c in enumerate(bytes_to_unicode().values())}
    merges = [("Ġ", "r"), ("e", "d"), ("Ġr", "ed")]
    for a, b in merges:
        vocab[a + b] = len(vocab)
    src = tmp_path / "src"
    src.mkdir()
    (src / "vocab.json").write_text(json.dumps(vocab))
    (src / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    slow = Qwen2Tokenizer.from_pretrained(str(src))  # the class tokenizer_config.json names in the published dirs
    slow.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>", "<IMG_CONTEXT>"]})
    slow.save_pretrained(tmp_path / "qwen2")
    assert json.loads((tmp_path / "qwen2" / "tokenizer_config.json").read_text())["tokenizer_class"] == (
        "Qwen2Tokenizer")

    tok = load_tokenizer(tmp_path / "qwen2")
    assert isinstance(tok, Qwen2TokenizerFast)
    assert tok.encode("a red") == [vocab["a"], vocab["Ġred"]]
    assert tok.encode("<IMG_CONTEXT>") == [slow.convert_tokens_to_ids("<IMG_CONTEXT>")]
    if not TRANSFORMERS_5:  # 5.x has one (tokenizers-based) Qwen2 class
        assert isinstance(load_tokenizer(tmp_path / "qwen2", use_fast=False), Qwen2Tokenizer)


def test_llama_directory_goes_through_auto_tokenizer(ckpt, sp, tmp_path):
    from transformers import LlamaTokenizer, LlamaTokenizerFast

    (tmp_path / "tokenizer.model").write_bytes((ckpt / "tokenizer.model").read_bytes())
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "LlamaTokenizer", "legacy": False,
                                                                  "add_bos_token": True}))
    LlamaTokenizer.from_pretrained(tmp_path).save_pretrained(tmp_path)
    tok = load_tokenizer(tmp_path)
    assert isinstance(tok, LlamaTokenizerFast)
    text = "a green triangle on a dotted background"
    assert tok(text).input_ids == [1] + sp.encode(text)


def test_errors_name_the_directory_and_what_is_missing(tmp_path, ckpt):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_tokenizer(tmp_path / "nowhere")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=rf"{tmp_path} has no tokenizer: expected tokenizer_config.json"):
        load_tokenizer(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text((ckpt / "tokenizer_config.json").read_text())
    with pytest.raises(FileNotFoundError, match="names InternLM2Tokenizer, which needs the SentencePiece model"):
        load_tokenizer(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "QWenTokenizer"}))
    with pytest.raises(ValueError, match="names tokenizer_class 'QWenTokenizer'.*remote tokenizer code is not run"):
        load_tokenizer(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="tokenizer_config.json is not valid JSON"):
        load_tokenizer(tmp_path)
    (tmp_path / "tokenizer.model").write_bytes(b"not a sentencepiece model")
    with pytest.raises(CheckpointError, match="is not a SentencePiece model"):
        InternLM2Tokenizer(str(tmp_path / "tokenizer.model"))
