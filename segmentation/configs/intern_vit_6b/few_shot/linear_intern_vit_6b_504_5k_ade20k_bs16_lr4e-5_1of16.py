# Few-shot, 1/16 of the training images (mIoU 46.5), 5k iterations, warmup 100.
# Merged, the values equal upstream's linear_intern_vit_6b_504_5k_ade20k_bs16_lr4e-5_1of16.py.
_base_ = ['./linear_intern_vit_6b_504_10k_ade20k_bs16_lr4e-5_1of8.py']
data = dict(train=dict(max_image_num=20210 // 16))
runner = dict(max_iters=5000)
lr_config = dict(warmup_iters=100)
