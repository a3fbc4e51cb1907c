"""Data preprocessor for the two-domain batches of ``UDADataset``."""
from typing import Any, Dict, Optional, Sequence

from mmseg.models.data_preprocessor import SegDataPreProcessor

from mmseg_uda.registry import MODELS


def check_target_unlabelled(samples: Optional[Sequence],
                            where: str) -> None:
    """Raise if any target data sample carries a label field (``gt_*``,
    e.g. ``gt_sem_seg``): target labels must never reach training.

    Cheap (a key lookup per sample); called on every training batch by
    :class:`UDADataPreProcessor` and ``UDASegmentor.loss``.
    """
    for i, sample in enumerate(samples or ()):
        keys = sample.keys() if hasattr(sample, 'keys') else ()
        fields = sorted(k for k in keys if str(k).startswith('gt_'))
        if fields:
            path = sample.metainfo.get('img_path', '?') if hasattr(
                sample, 'metainfo') else '?'
            raise ValueError(
                f'{where}: target data sample {i} of the batch ({path}) '
                f'carries {fields}. Target labels must never be used for '
                'training: remove LoadAnnotations from the target pipeline '
                '(train_dataloader.dataset.target.pipeline), or stop the '
                'code that attaches the label.')


@MODELS.register_module()
class UDADataPreProcessor(SegDataPreProcessor):
    """mmseg's ``SegDataPreProcessor`` applied to each domain of a UDA batch.

    A training batch from ``UDADataset`` is
    ``dict(inputs=dict(source=[...], target=[...]),
    data_samples=dict(source=[...], target=[...]))``; every domain is cast,
    normalised and padded exactly as mmseg does for one domain, and the
    result keeps the per-domain dicts. Single-domain batches (validation and
    test dataloaders) go through ``SegDataPreProcessor`` unchanged.

    Every call checks that no target data sample carries a label
    (:func:`check_target_unlabelled`).

    Source and target crops may differ in size (AdaptSegNet: 1280×720 vs
    1024×512), so with neither ``size`` nor ``size_divisor`` given, each
    domain is padded to its own batch maximum (``size_divisor=1``).
    """

    def __init__(self, *args, size=None, size_divisor=None, **kwargs):
        if size is None and size_divisor is None:
            size_divisor = 1
        super().__init__(
            *args, size=size, size_divisor=size_divisor, **kwargs)

    def forward(self, data: dict, training: bool = False) -> Dict[str, Any]:
        inputs = data['inputs']
        if not isinstance(inputs, dict):
            return super().forward(data, training)
        samples = data.get('data_samples') or {}
        check_target_unlabelled(samples.get('target'), 'UDADataPreProcessor')
        out_inputs, out_samples = {}, {}
        for domain, domain_inputs in inputs.items():
            out = super().forward(
                dict(inputs=domain_inputs,
                     data_samples=samples.get(domain)), training)
            out_inputs[domain] = out['inputs']
            out_samples[domain] = out['data_samples']
        return dict(inputs=out_inputs, data_samples=out_samples)
