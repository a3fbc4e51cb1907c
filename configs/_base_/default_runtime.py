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
env_cfg = dict(cudnn_benchmark=False)
randomness = dict(seed=0)
