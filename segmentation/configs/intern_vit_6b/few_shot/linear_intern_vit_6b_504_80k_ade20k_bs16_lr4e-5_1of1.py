# Few-shot, 1/1 of the training images (mIoU 57.2): linear probing's config with the backbone trained
# (drop path 0.4, layer-wise LR decay 0.95, weight decay 0.05) and the head on the last layer.
# Merged, the values equal upstream's linear_intern_vit_6b_504_80k_ade20k_bs16_lr4e-5_1of1.py.
_base_ = ['../linear_probing/linear_intern_vit_6b_504_80k_ade20k_bs16_lr4e-5_frozen.py']
model = dict(backbone=dict(drop_path_rate=0.4, freeze_vit=False, out_indices=[47]))
optimizer = dict(weight_decay=0.05, paramwise_cfg=dict(layer_decay_rate=0.95))
