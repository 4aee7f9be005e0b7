"""InternVL-Chat applications built on the ``internvl`` library: the command-line chat
(``python -m internvl_chat.chat``). The model, its templates and image input live in ``internvl``
(``internvl.chat_model``, ``internvl.conversation``, ``internvl.chat_image``)."""
