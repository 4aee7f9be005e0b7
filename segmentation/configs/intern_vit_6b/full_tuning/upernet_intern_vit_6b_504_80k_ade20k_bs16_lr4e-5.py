# Full tuning (mIoU 58.9): head tuning's model with the backbone trained (drop path 0.4, layer-wise LR decay
# 0.95) and the auxiliary head on the third level. Merged, the values equal upstream's
# upernet_intern_vit_6b_504_80k_ade20k_bs16_lr4e-5.py. The 6B with AdamW in fp32 does not fit one 80 GB GPU:
# see segmentation/README.md (--backbone-dtype bf16).
_base_ = ['../head_tuning/upernet_intern_vit_6b_504_80k_ade20k_bs16_lr4e-5_frozen.py']
model = dict(backbone=dict(drop_path_rate=0.4, freeze_vit=False), auxiliary_head=dict(in_index=2))
optimizer = dict(paramwise_cfg=dict(layer_decay_rate=0.95))
