# CPU-sized linear probing: upstream's linear-probing config with a tiny InternViT of the 6B recipe
# (4 layers, width 64, trained at 56 px, run at 112 px) on the synthetic ADE20K of the data kit
# (5 classes: background + 4 coloured shapes). Prepare the data and the backbone as segmentation/README.md says.
_base_ = ['../intern_vit_6b/linear_probing/linear_intern_vit_6b_504_80k_ade20k_bs16_lr4e-5_frozen.py']
pretrained = 'pretrained/tiny_intern_vit_6b_recipe.pth'
data_root = 'data/ade_synthetic/ADEChallengeData2016'
crop_size = (112, 112)
model = dict(
    backbone=dict(pretrain_size=56, img_size=112, embed_dim=64, depth=4, num_heads=4, with_cp=False,
                  use_flash_attn=False, out_indices=[2], pretrained=pretrained),
    decode_head=dict(in_channels=64, channels=64, num_classes=5),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(72, 72)))
img_norm_cfg = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], to_rgb=True)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='Resize', img_scale=(448, 112), ratio_range=(0.5, 2.0)),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='Normalize', **img_norm_cfg),
    dict(type='Pad', size=crop_size, pad_val=0, seg_pad_val=255),
    dict(type='DefaultFormatBundle'),
    dict(type='Collect', keys=['img', 'gt_semantic_seg']),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='MultiScaleFlipAug', img_scale=(448, 168), flip=False, transforms=[
        dict(type='SETR_Resize', keep_ratio=True, crop_size=crop_size, setr_multi_scale=True),
        dict(type='ResizeToMultiple', size_divisor=14),
        dict(type='RandomFlip'),
        dict(type='Normalize', **img_norm_cfg),
        dict(type='ImageToTensor', keys=['img']),
        dict(type='Collect', keys=['img']),
    ])
]
data = dict(
    samples_per_gpu=8,
    workers_per_gpu=2,
    train=dict(data_root=data_root, classes='classes.txt', pipeline=train_pipeline),
    val=dict(data_root=data_root, classes='classes.txt', pipeline=test_pipeline),
    test=dict(data_root=data_root, classes='classes.txt', pipeline=test_pipeline))
optimizer = dict(lr=1e-2)
lr_config = dict(warmup_iters=10)
runner = dict(max_iters=60)
checkpoint_config = dict(interval=20, max_keep_ckpts=2)
evaluation = dict(interval=30)
log_config = dict(interval=10)
custom_hooks = []
