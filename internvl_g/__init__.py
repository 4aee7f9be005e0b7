"""InternVL-C/G applications built on the ``internvl`` library: the stage-2 retrieval fine-tune (``finetune``, its
objective ``retrieval_model``, data ``train_data``, layer-wise decay ``layer_decay``, the scripts in ``shell/``, the
CPU try-out ``demo``) and zero-shot caption evaluation (``evaluate_caption``, ``evaluate.sh``)."""
