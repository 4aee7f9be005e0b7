"""InternVL model library: InternViT, InternVL-C/G (QLLaMA) and InternVL-Chat (InternLM2 and others).

    from internvl import InternVisionModel, InternVLModel, InternVLChatModel, load_tokenizer
    vit = InternVisionModel.from_pretrained("pretrained/InternViT-6B-224px", torch_dtype=torch.bfloat16)
    clip = InternVLModel.from_pretrained("pretrained/InternVL-14B-224px", torch_dtype=torch.bfloat16)
    chat = InternVLChatModel.from_pretrained("pretrained/InternVL2-2B", torch_dtype=torch.bfloat16)
    tokenizer = load_tokenizer("pretrained/InternVL2-2B")
"""
from transformers import AutoConfig, AutoModel

from .chat_model import InternVLChatConfig, InternVLChatModel, register_internvl_chat
from .intern_vit import InternVisionConfig, InternVisionModel
from .internlm2 import InternLM2Config, InternLM2ForCausalLM, InternLM2Model, register_internlm2
from .internvl_cg import InternVLConfig, InternVLModel, build_cg_tokenizer, load_internvl_c_pth
from .layers import attention, set_attention_backend
from .tokenization import InternLM2Tokenizer, load_tokenizer

__version__ = "0.1.0"

__all__ = ["InternVisionConfig", "InternVisionModel", "InternVLConfig", "InternVLModel", "build_cg_tokenizer",
           "load_internvl_c_pth", "InternLM2Config", "InternLM2Model", "InternLM2ForCausalLM", "InternLM2Tokenizer",
           "load_tokenizer", "InternVLChatConfig", "InternVLChatModel", "attention", "set_attention_backend"]

# The published config.json files name remote code (auto_map). Registering the model types makes
# AutoConfig / AutoModel use these classes instead, with no trust_remote_code and no download.
# InternVL-C/G is not registered on import: its published model_type "internvl" is also transformers'
# own InternVL3 (-hf) type; call internvl.internvl_cg.register_internvl_cg() to take it over.
AutoConfig.register(InternVisionConfig.model_type, InternVisionConfig, exist_ok=True)
AutoModel.register(InternVisionConfig, InternVisionModel, exist_ok=True)
register_internlm2()
register_internvl_chat()
