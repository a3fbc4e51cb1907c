# Runtime shared by every mmseg-uda config: mmseg's own default runtime
# (default_scope='mmseg', visualizer, log processor) plus the package import
# and the UDA DDP wrapper.
_base_ = ['mmseg::_base_/default_runtime.py']

custom_imports = dict(imports=['mmseg_uda'], allow_failed_imports=False)
# One forward per iteration through the DDP wrapper, the segmentor and
# discriminator optimizers stepped after both backwards; on CPU/gloo the
# wrapper drops device_ids and reverts SyncBN to BN.
model_wrapper_cfg = dict(
    type='UDADistributedDataParallel',
    broadcast_buffers=False,
    find_unused_parameters=False)
# cudnn_benchmark: mmengine's (autotuned conv kernels; fixed crop sizes make
# it pay on GPUs). allow_tf32: None keeps PyTorch's defaults, True/False sets
# TF32 matmuls and cuDNN convolutions for float32 training on Ampere+ GPUs
# (mmseg_uda.engine.precision.apply_backend_flags, applied by tools/train.py).
env_cfg = dict(cudnn_benchmark=False, allow_tf32=None)
# True: model in channels_last (NHWC) memory format, faster convolutions on
# GPU tensor cores with --amp / --amp-dtype bfloat16 (tools/train.py).
channels_last = False
randomness = dict(seed=0)
