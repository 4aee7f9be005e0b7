# Head tuning (mIoU 54.9): the frozen InternViT-6B of linear probing, with upstream's pyramid over layers
# 11 / 23 / 35 / 47 (strides 3.5 / 7 / 14 / 28), UperNet (1536 channels) and an auxiliary FCN head on the
# second level. Merged, the values equal upstream's upernet_intern_vit_6b_504_80k_ade20k_bs16_lr4e-5_frozen.py
# (which builds on MMSegmentation's upernet_r50 base; here the two heads are written out).
_base_ = ['../linear_probing/linear_intern_vit_6b_504_80k_ade20k_bs16_lr4e-5_frozen.py']
norm_cfg = dict(type='SyncBN', requires_grad=True)
model = dict(
    backbone=dict(with_fpn=True, out_indices=[11, 23, 35, 47]),
    decode_head=dict(
        _delete_=True, type='UPerHead', in_channels=[3200, 3200, 3200, 3200], in_index=[0, 1, 2, 3],
        pool_scales=(1, 2, 3, 6), channels=1536, dropout_ratio=0.1, num_classes=150, norm_cfg=norm_cfg,
        align_corners=False, loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    auxiliary_head=dict(
        type='FCNHead', in_channels=3200, in_index=1, channels=1536, num_convs=1, concat_input=False,
        dropout_ratio=0.1, num_classes=150, norm_cfg=norm_cfg, align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=0.4)),
    train_cfg=dict())
optimizer = dict(weight_decay=0.05)
