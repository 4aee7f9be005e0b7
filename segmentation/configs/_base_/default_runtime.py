# Runtime defaults of MMSegmentation 0.x. Here: log_config.interval is the logging interval (text log,
# TensorBoard and progress bar are always on); the other keys are accepted and have no effect.
log_config = dict(
    interval=50,
    hooks=[dict(type='TextLoggerHook', by_epoch=False), dict(type='TensorboardLoggerHook')])
dist_params = dict(backend='nccl')
log_level = 'INFO'
load_from = None
resume_from = None
workflow = [('train', 1)]
cudnn_benchmark = True
