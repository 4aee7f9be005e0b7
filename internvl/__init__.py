"""InternVL model library: InternViT, and (as they land) InternVL-C/G and InternVL-Chat.

    from internvl import InternVisionConfig, InternVisionModel
    model = InternVisionModel.from_pretrained("pretrained/InternViT-6B-224px", torch_dtype=torch.bfloat16)
"""
from transformers import AutoConfig, AutoModel

from .intern_vit import InternVisionConfig, InternVisionModel
from .layers import attention, set_attention_backend

__version__ = "0.1.0"

__all__ = ["InternVisionConfig", "InternVisionModel", "attention", "set_attention_backend"]

# The published config.json files name remote code (auto_map). Registering the model types makes
# AutoConfig / AutoModel use these classes instead, with no trust_remote_code and no download.
AutoConfig.register(InternVisionConfig.model_type, InternVisionConfig, exist_ok=True)
AutoModel.register(InternVisionConfig, InternVisionModel, exist_ok=True)
