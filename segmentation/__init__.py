"""InternViT semantic segmentation on ADE20K: linear probing, UperNet head tuning, full tuning and few-shot
(upstream's ``segmentation/``, without MMSegmentation 0.x / mmcv-full). See segmentation/README.md."""
