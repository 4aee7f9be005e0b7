# Few-shot, 1/2 of the training images (mIoU 55.8), 40k iterations: a random half, drawn with the run's
# seed (upstream's max_image_num), and a plain keep-ratio resize at test time (upstream's few-shot datasets).
# Merged, the values equal upstream's linear_intern_vit_6b_504_40k_ade20k_bs16_lr4e-5_1of2.py.
_base_ = ['./linear_intern_vit_6b_504_80k_ade20k_bs16_lr4e-5_1of1.py']
img_norm_cfg = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], to_rgb=True)
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(
        type='MultiScaleFlipAug',
        img_scale=(2016, 504),
        flip=False,
        transforms=[
            dict(type='Resize', keep_ratio=True),
            dict(type='ResizeToMultiple', size_divisor=14),
            dict(type='RandomFlip'),
            dict(type='Normalize', **img_norm_cfg),
            dict(type='ImageToTensor', keys=['img']),
            dict(type='Collect', keys=['img']),
        ])
]
data = dict(train=dict(max_image_num=20210 // 2), val=dict(pipeline=test_pipeline), test=dict(pipeline=test_pipeline))
runner = dict(max_iters=40000)
lr_config = dict(warmup_iters=800)
