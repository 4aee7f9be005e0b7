"""Which parameters a fine-tune trains (internvl.train.trainable, shared by internvl_chat and internvl_g): upstream's
order (freeze, LoRA-wrap with peft, unfreeze), the rank written into the config, the errors, the report."""
from types import SimpleNamespace

import pytest
from torch import nn

from internvl.errors import ConfigError
from internvl.train.trainable import LoraRequest, apply_trainable_set, trainable_report

pytest.importorskip("peft")


class Toy(nn.Module):
    """A vision part and a language part whose output layer sits inside what LoRA wraps (as the chat model's
    lm_head inside its language model)."""

    def __init__(self, already_lora: int = 0):
        super().__init__()
        self.config = SimpleNamespace(use_llm_lora=already_lora)
        self.vision = nn.Linear(4, 4)
        self.language = nn.Sequential()
        self.language.add_module("proj", nn.Linear(4, 4))
        self.language.add_module("head", nn.Linear(4, 3))

    def wrap_llm_lora(self, r: int, lora_alpha: int) -> None:
        from peft import LoraConfig, get_peft_model

        self.wrapped_with = (r, lora_alpha)
        self.language = get_peft_model(self.language, LoraConfig(r=r, lora_alpha=lora_alpha, target_modules=["proj"]))

    def head(self):
        return self.language.get_submodule("base_model.model.head") if hasattr(self.language, "base_model") else \
            self.language.head


def _trainable(model) -> set:
    return {name for name, p in model.named_parameters() if p.requires_grad}


def test_freeze_then_wrap_then_unfreeze_and_the_report():
    model = Toy()
    report = apply_trainable_set(model, freeze=[model.vision], lora=[LoraRequest("use_llm_lora", 2,
                                                                                 model.wrap_llm_lora)],
                                 unfreeze=[lambda: model.head().parameters()])
    trainable = _trainable(model)
    # the LoRA adapters and the unfrozen head train; the wrapped weight and the frozen part do not
    assert {n for n in trainable if "lora_" in n} and all(n.startswith("language.") for n in trainable)
    assert {n for n in trainable if "lora_" not in n} == {"language.base_model.model.head.weight",
                                                          "language.base_model.model.head.bias"}
    assert model.wrapped_with == (2, 4) and model.config.use_llm_lora == 2  # upstream's alpha; the saved config
    n = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    assert report == trainable_report(model) == (f"trainable parameters: {n:,} of {total:,} "
                                                 f"({100 * n / total:.2f}%) in ['language']")


def test_a_zero_rank_wraps_nothing():
    model = Toy()
    apply_trainable_set(model, lora=[LoraRequest("use_llm_lora", 0, model.wrap_llm_lora)])
    assert not hasattr(model, "wrapped_with") and model.config.use_llm_lora == 0
    assert _trainable(model) == {n for n, _ in model.named_parameters()}


@pytest.mark.parametrize("make, kwargs, message", [
    (Toy, lambda m: {"lora": [LoraRequest("use_llm_lora", -1, m.wrap_llm_lora)]},
     "--use_llm_lora -1: a LoRA rank is >= 0"),
    (lambda: Toy(already_lora=8), lambda m: {"lora": [LoraRequest("use_llm_lora", 4, m.wrap_llm_lora)],
                                             "source": "ckpt/tiny"},
     "--use_llm_lora 4: ckpt/tiny already has LoRA adapters of rank 8"),
    (Toy, lambda m: {"freeze": [m], "flags_hint": "--freeze_all"},
     "--freeze_all leave no parameter to train"),
])
def test_errors_name_the_flag(make, kwargs, message):
    model = make()
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        apply_trainable_set(model, **kwargs(model))
