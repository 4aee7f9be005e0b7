"""Label masks of every template: which tokens train, against a rule worked out by hand on the token sequence.

The rule (what upstream's preprocess functions compute when the tokenizer behaves): the tokens of each
answer and the separator that ends it are trained; the system prompt, the questions, the image tokens,
the assistant header (``<|im_start|>assistant\\n`` / ``<|assistant|>\\n``), <s>, and internvl2_5's
newline after ``<|im_end|>`` are not. The code under test does not apply this rule: it walks upstream's
piece counts (checked token for token against upstream's functions when written; see the report), so
the two agree only if the walk is right."""
import json
from pathlib import Path

import pytest

from chat_finetune_helpers import TEMPLATE_OF, training_tokenizer
from internvl_chat.chat_data.preprocess import IGNORE_INDEX, UnusableSample, tokenize_conversation

CONVERSATIONS = {
    "multi-turn": ([("human", "<image>\nWhat colour is the shape?"), ("gpt", "red"),
                    ("human", "Where is it?"), ("gpt", "top left of the image")], [8]),
    "multi-image": ([("human", "Image-1: <image>\nImage-2: <image>\nWhat colours are the two shapes?"),
                     ("gpt", "blue and yellow")], [4, 12]),
    "pure-text": ([("human", "How do you say red in Chinese?"), ("gpt", "红色"),
                   ("human", "And green?"), ("gpt", "绿色")], []),
    "chinese": ([("human", "<image>\n请用一句话描述这张图片。"), ("gpt", "图片左上方有一个红色的圆形，背景是条纹。")], [4]),
}
ANSWER_HEADERS = {"internlm2-chat": ("<|im_start|>", "assistant\n", "<|im_end|>"),
                  "Hermes-2": ("<|im_start|>", "assistant\n", "<|im_end|>"),
                  "internvl2_5": ("<|im_start|>", "assistant\n", "<|im_end|>"),
                  "phi3-chat": ("<|assistant|>", "\n", "<|end|>")}


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory):
    root = tmp_path_factory.mktemp("tokenizers")
    return {llm: training_tokenizer(root, llm) for llm in TEMPLATE_OF}


def hand_labels(ids, tokenizer, template):
    """The rule of the module doc, applied to the token sequence."""
    opener, header, closer = ANSWER_HEADERS[template]
    open_id, close_id = tokenizer.convert_tokens_to_ids(opener), tokenizer.convert_tokens_to_ids(closer)
    labels, i = [IGNORE_INDEX] * len(ids), 0
    while i < len(ids):
        if ids[i] == open_id:
            for k in range(1, 12):  # the header's text tokens after the opener
                if tokenizer.decode(ids[i + 1:i + 1 + k]).strip(" ") == header:
                    j = i + 1 + k
                    while ids[j] != close_id:
                        labels[j] = ids[j]
                        j += 1
                    labels[j] = ids[j]  # the turn's end token trains too
                    i = j
                    break
        i += 1
    return labels


@pytest.mark.parametrize("llm", list(TEMPLATE_OF))
@pytest.mark.parametrize("case", list(CONVERSATIONS))
def test_trained_tokens_are_the_answers_and_their_end_token(tokenizers, llm, case):
    template, tokenizer = TEMPLATE_OF[llm], tokenizers[llm]
    turns, image_tokens = CONVERSATIONS[case]
    out = tokenize_conversation(template, turns, tokenizer, image_tokens, max_length=1000)
    assert out.labels == hand_labels(out.input_ids, tokenizer, template)
    answers = [text for role, text in turns if role == "gpt"]
    assert out.num_trained > sum(map(len, answers)) // 4  # real answers, not a handful of tokens
    # Labels are the input tokens where trained, and every image token is present exactly once.
    assert all(label in (IGNORE_INDEX, token) for label, token in zip(out.labels, out.input_ids))
    assert out.input_ids.count(tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>")) == sum(image_tokens)
    assert out.input_ids.count(tokenizer.convert_tokens_to_ids("</img>")) == len(image_tokens)


def test_template_specifics(tokenizers):
    """<s> starts internlm2-chat, not Hermes-2 (Qwen2 has none); phi3 ignores <|endoftext|> even in an answer;
    a leading system turn replaces the template's system message; internlm2-chat strips the messages."""
    turns = [("human", "  Hello  "), ("gpt", " Hi! ")]
    internlm = tokenize_conversation("internlm2-chat", turns, tokenizers["internlm2"], [], 400)
    assert internlm.input_ids[0] == tokenizers["internlm2"].bos_token_id
    assert tokenizers["internlm2"].decode(internlm.input_ids).count("Hello") == 1
    assert "  Hello  " not in tokenizers["internlm2"].decode(internlm.input_ids)
    hermes = tokenize_conversation("Hermes-2", turns, tokenizers["qwen2"], [], 400)
    assert hermes.input_ids[0] == tokenizers["qwen2"].convert_tokens_to_ids("<|im_start|>")
    phi3 = tokenize_conversation("phi3-chat", [("human", "Say it"), ("gpt", "done<|endoftext|>")],
                                 tokenizers["phi3"], [], 400)
    endoftext = tokenizers["phi3"].convert_tokens_to_ids("<|endoftext|>")
    assert endoftext in phi3.input_ids and endoftext not in phi3.labels
    custom = tokenize_conversation("internvl2_5", turns, tokenizers["llama"], [], 400, system="You are terse.")
    assert "You are terse." in tokenizers["llama"].decode(custom.input_ids)


def test_cutting_at_max_length(tokenizers):
    tokenizer = tokenizers["internlm2"]
    turns, image_tokens = CONVERSATIONS["multi-turn"]
    full = tokenize_conversation("internlm2-chat", turns, tokenizer, image_tokens, 1000)
    second_answer = [i for i, label in enumerate(full.labels) if label != IGNORE_INDEX][-1]
    # Cut inside the last answer: trained on what is left, exactly the full sample's prefix.
    cut = tokenize_conversation("internlm2-chat", turns, tokenizer, image_tokens, second_answer)
    assert cut.truncated and cut.input_ids == full.input_ids[:second_answer] and cut.labels == full.labels[:second_answer]
    first_answer = full.labels.index(next(label for label in full.labels if label != IGNORE_INDEX))
    with pytest.raises(UnusableSample, match="cuts the .*before its first answer"):
        tokenize_conversation("internlm2-chat", turns, tokenizer, image_tokens, first_answer)
    first_context = full.input_ids.index(tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>"))
    with pytest.raises(UnusableSample, match="cuts into the image tokens"):
        tokenize_conversation("internlm2-chat", turns, tokenizer, image_tokens, first_context + 2)


def test_tokenization_mismatch_is_an_error_not_a_silent_zero(tokenizers):
    """The Qwen2-style tokenizer of the tiny checkpoints adds SentencePiece's leading space to every piece, so
    upstream's InternLM2 walk counts a different length than the whole prompt has (upstream: all labels -100
    and a printed warning)."""
    turns = CONVERSATIONS["multi-turn"][0]
    with pytest.raises(UnusableSample, match=r"tokenization mismatch: the internlm2-chat turns add up to \d+ tokens"):
        tokenize_conversation("internlm2-chat", turns, tokenizers["qwen2"], [8], 1000)


def test_text_of_its_own_image_tokens_is_refused(tokenizers):
    with pytest.raises(UnusableSample, match="'</img>' and .* '<IMG_CONTEXT>'"):
        tokenize_conversation("internlm2-chat", [("human", "what is <IMG_CONTEXT>?"), ("gpt", "a token")],
                              tokenizers["internlm2"], [], 400)


# ------------------------------------------------------------------- against upstream's own preprocess functions
UPSTREAM = json.loads((Path(__file__).parent / "fixtures/chat_masks/upstream_masks.json").read_text(encoding="utf-8"))
# Upstream's hard-coded phi3 offsets miss by one with transformers 5's tokenizer on conversations of two turns or
# more: it prints "tokenization mismatch" and trains on nothing (fixtures/chat_masks/make_fixtures.py says more).
UPSTREAM_MISMATCH = {("phi3-chat", "multi-turn"), ("phi3-chat", "pure-text")}


@pytest.fixture(scope="module")
def upstream_tokenizers(tmp_path_factory):
    from internvl.datakit.checkpoints import write_chat_tokenizer
    from internvl_chat.chat_data.build import load_training_tokenizer

    root = tmp_path_factory.mktemp("upstream-tokenizers")
    tokenizers = {}
    for llm in {r["llm"] for r in UPSTREAM["records"]}:
        write_chat_tokenizer(root / llm, llm)
        tokenizers[llm] = load_training_tokenizer(str(root / llm), UPSTREAM["max_length"])[0]
    return tokenizers


@pytest.mark.parametrize("record", UPSTREAM["records"], ids=lambda r: f"{r['template']}-{r['case']}")
def test_masks_equal_upstreams_preprocess_results(record, upstream_tokenizers):
    conversation, system = record["conversation"], None
    if conversation[0]["from"] == "system":
        system, conversation = conversation[0]["value"], conversation[1:]
    out = tokenize_conversation(record["template"], [(t["from"], t["value"]) for t in conversation],
                                upstream_tokenizers[record["llm"]], record["image_tokens"], UPSTREAM["max_length"],
                                system=system)
    assert out.input_ids == record["input_ids"]
    if (record["template"], record["case"]) in UPSTREAM_MISMATCH:
        assert set(record["labels"]) == {IGNORE_INDEX} and out.num_trained > 0
        assert out.labels == hand_labels(out.input_ids, upstream_tokenizers[record["llm"]], record["template"])
    else:
        assert out.labels == record["labels"]
        assert out.num_trained > 0


def test_the_upstream_fixtures_cover_the_four_templates_and_a_system_turn():
    cases = {(r["template"], r["case"]) for r in UPSTREAM["records"]}
    assert {t for t, _ in cases} == {"internlm2-chat", "Hermes-2", "phi3-chat", "internvl2_5"}
    assert ("internvl2_5", "system") in cases and all((t, "multi-image") in cases for t, _ in cases)
