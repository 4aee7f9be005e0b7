"""InternVL-C/G applications built on the ``internvl`` library: zero-shot caption evaluation
(``evaluate_caption``, ``evaluate.sh``)."""
