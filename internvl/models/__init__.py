"""The architectures (layer 2): InternViT, QLLaMA and InternVL-C/G, InternLM2, InternVL-Chat, their configs,
tokenizers, chat templates and shared layers. Imports only ``internvl.data`` and the core modules
(``errors``, ``compat``, ``fileio``), never training or evaluation code."""
