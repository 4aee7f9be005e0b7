"""Fine-tuning data of InternVL-Chat: the meta json + JSONL format (:mod:`.chat_jsonl`, reader and synthetic
writer), tokenization and label masks per template (:mod:`.preprocess`), samples, batches and their order
(:mod:`.dataset`), and the ``check`` / ``inspect`` commands (``python -m internvl_chat.chat_data``)."""
