"""InternViT linear probing on ImageNet-1K and evaluation on ImageNet-ReaL / V2 / A / R / Sketch.

The application counterpart of upstream InternVL's ``classification/``, built on the shared
``internvl`` library (the backbone is ``internvl.InternVisionModel``). Entry points:

    python classification/main.py --cfg classification/configs/intern_vit_6b_1k_224.yaml [--eval] [--resume CKPT]
    python -m classification.main ...          (the same, from anywhere after ``pip install -e .``)
    python -m classification.demo              (``make demo-classification``: the whole pipeline on synthetic
                                               data, CPU)

See classification/README.md.
"""
