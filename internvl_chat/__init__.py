"""InternVL-Chat applications built on the ``internvl`` library: fine-tuning on your own data
(``python -m internvl_chat.finetune``, the scripts under ``internvl_chat/shell/``), data check and inspection
(``python -m internvl_chat.chat_data``), caption evaluation (``internvl_chat/evaluate.sh``), LoRA merge and export
(``internvl_chat/tools/merge_lora.py``), the whole workflow on a CPU (``python -m internvl_chat.demo``) and the
command-line chat (``python -m internvl_chat.chat``). The model, its templates and image input live in
``internvl`` (``internvl.models.chat_model``, ``internvl.models.conversation``, ``internvl.data.chat_image``)."""
