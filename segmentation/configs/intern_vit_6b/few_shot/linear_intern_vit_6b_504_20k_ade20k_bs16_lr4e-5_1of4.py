# Few-shot, 1/4 of the training images (mIoU 53.3), 20k iterations, warmup 400.
# Merged, the values equal upstream's linear_intern_vit_6b_504_20k_ade20k_bs16_lr4e-5_1of4.py.
_base_ = ['./linear_intern_vit_6b_504_40k_ade20k_bs16_lr4e-5_1of2.py']
data = dict(train=dict(max_image_num=20210 // 4))
runner = dict(max_iters=20000)
lr_config = dict(warmup_iters=400)
