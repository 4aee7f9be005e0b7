# CPU-sized head tuning, as upstream's UperNet head-tuning config: the tiny InternViT of
# linear_intern_vit_tiny_synthetic.py, frozen, with the pyramid over its 4 layers, UperNet + auxiliary FCN head.
_base_ = ['./linear_intern_vit_tiny_synthetic.py']
norm_cfg = dict(type='SyncBN', requires_grad=True)
model = dict(
    backbone=dict(with_fpn=True, out_indices=[0, 1, 2, 3]),
    decode_head=dict(_delete_=True, type='UPerHead', in_channels=[64, 64, 64, 64], in_index=[0, 1, 2, 3],
                     pool_scales=(1, 2, 3, 6), channels=32, dropout_ratio=0.1, num_classes=5, norm_cfg=norm_cfg,
                     align_corners=False,
                     loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    auxiliary_head=dict(type='FCNHead', in_channels=64, in_index=1, channels=32, num_convs=1, concat_input=False,
                        dropout_ratio=0.1, num_classes=5, norm_cfg=norm_cfg, align_corners=False,
                        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=0.4)))
optimizer = dict(weight_decay=0.05)
