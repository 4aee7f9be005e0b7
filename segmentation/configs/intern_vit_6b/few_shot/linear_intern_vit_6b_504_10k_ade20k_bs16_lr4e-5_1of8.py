# Few-shot, 1/8 of the training images (mIoU 50.0), 10k iterations, warmup 200.
# Merged, the values equal upstream's linear_intern_vit_6b_504_10k_ade20k_bs16_lr4e-5_1of8.py.
_base_ = ['./linear_intern_vit_6b_504_20k_ade20k_bs16_lr4e-5_1of4.py']
data = dict(train=dict(max_image_num=20210 // 8))
runner = dict(max_iters=10000)
lr_config = dict(warmup_iters=200)
