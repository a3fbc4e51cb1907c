"""DDP wrapper for ``UDASegmentor``."""
from mmengine.model import MMDistributedDataParallel, revert_sync_batchnorm

from mmseg_uda.registry import ROOT_MODEL_WRAPPERS


@ROOT_MODEL_WRAPPERS.register_module()
class UDADistributedDataParallel(MMDistributedDataParallel):
    """``MMDistributedDataParallel`` that lets the model run its own UDA
    train step, with the whole iteration's forward going through this
    wrapper (so every learning sub-module, discriminators included, has its
    gradients all-reduced; lhoyer/DAFormer does not support multi-GPU
    training, see lhoyer/DAFormer#9).

    mmengine's wrapper does one ``update_params`` on one optimizer; a UDA
    iteration may step a segmentor and a discriminator optimizer. The model's
    ``uda_train_step(data, optim_wrapper, forward_module=self)`` does that.

    On a CPU-only machine (gloo backend) ``device_ids`` must be None and
    SyncBN cannot run (DDP rejects SyncBatchNorm on CPU modules), so both
    are fixed here.
    """

    def __init__(self, module, device_ids=None, **kwargs):
        on_cpu = all(p.device.type == 'cpu' for p in module.parameters())
        if on_cpu:
            module = revert_sync_batchnorm(module)
            device_ids = None
            kwargs.pop('output_device', None)
        super().__init__(module=module, device_ids=device_ids, **kwargs)

    def train_step(self, data, optim_wrapper):
        if hasattr(self.module, 'uda_train_step'):
            return self.module.uda_train_step(data, optim_wrapper, self)
        return super().train_step(data, optim_wrapper)
