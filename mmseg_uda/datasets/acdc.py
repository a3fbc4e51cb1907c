"""ACDC, the Adverse Conditions Dataset with Correspondences (Sakaridis et
al., ICCV 2021), a target domain of MIC and HRDA (Cityscapes → ACDC).

Dark Zurich needs no class of its own: mmseg's ``DarkZurichDataset``
(suffixes ``_rgb_anon.png`` / ``_gt_labelTrainIds.png``) reads its layout
as downloaded (``rgb_anon/train/night``, ``rgb_anon/val/night`` +
``gt/val/night``); ``tools/dataset_converters/dark_zurich.py`` validates it.
"""
import copy
import os.path as osp
from typing import List, Optional, Sequence

from mmseg_uda.registry import DATASETS
from .converted_label_dataset import ConvertedLabelDataset

ACDC_CONDITIONS = ('fog', 'night', 'rain', 'snow')


@DATASETS.register_module()
class ACDCDataset(ConvertedLabelDataset):
    """ACDC with the 19 Cityscapes trainIds, read in its download layout::

        DATA_ROOT/rgb_anon/<condition>/<split>/<sequence>/*_rgb_anon.png
        DATA_ROOT/gt/<condition>/<split>/<sequence>/*_gt_labelTrainIds.png

    (``rgb_anon_trainvaltest.zip`` and ``gt_trainval.zip`` extracted into
    DATA_ROOT; ``tools/dataset_converters/acdc.py`` validates the pairs and
    writes any missing trainId label from ``*_gt_labelIds.png``).

    MIC/HRDA (``lhoyer/MIC`` @ 2f932a9, ``seg/mmseg/datasets/acdc.py`` and
    ``seg/configs/_base_/datasets/uda_cityscapesHR_to_acdcHR_1024x1024.py``)
    train on all four conditions of the train split merged, after moving
    the files into ``rgb_anon/train/`` with rsync. Here the conditions are
    read in place: ``conditions`` lists those to merge (in this order), and
    ``split`` selects ``train``/``val``. ``conditions=None`` reads
    ``data_prefix`` as a plain folder instead (the restructured layout, or
    one condition given by path).

    Args:
        split (str): ``'train'`` or ``'val'`` (the test split has no public
            labels: predict it and submit to the ACDC server).
        conditions (Sequence[str] | None): subset of
            ``('fog', 'night', 'rain', 'snow')``; None: see above.
        data_prefix (dict): roots of the images and labels below
            ``data_root``. Default ``rgb_anon`` / ``gt``.
    """
    CONVERTER = 'acdc'
    ORIGINAL_LABEL_SUFFIX = '_gt_labelIds.png'

    def __init__(self,
                 split: str = 'train',
                 conditions: Optional[Sequence[str]] = ACDC_CONDITIONS,
                 img_suffix: str = '_rgb_anon.png',
                 seg_map_suffix: str = '_gt_labelTrainIds.png',
                 data_prefix: dict = dict(
                     img_path='rgb_anon', seg_map_path='gt'),
                 **kwargs) -> None:
        if split not in ('train', 'val'):
            raise ValueError(
                f"ACDCDataset: split must be 'train' or 'val' (labelled "
                f'splits), got {split!r}.')
        if conditions is not None:
            conditions = tuple(conditions)
            unknown = [c for c in conditions if c not in ACDC_CONDITIONS]
            if unknown or not conditions:
                raise ValueError(
                    f'ACDCDataset: conditions must be a non-empty subset of '
                    f'{ACDC_CONDITIONS}, got {conditions!r}.')
        self.split = split
        self.conditions = conditions
        super().__init__(
            img_suffix=img_suffix,
            seg_map_suffix=seg_map_suffix,
            data_prefix=data_prefix,
            **kwargs)

    def load_data_list(self) -> List[dict]:
        if self.conditions is None:
            return super().load_data_list()
        roots = copy.deepcopy(self.data_prefix)
        data_list = []
        try:
            for cond in self.conditions:
                self.data_prefix = {
                    key: osp.join(root, cond, self.split) if root else root
                    for key, root in roots.items()
                }
                data_list += super().load_data_list()
        finally:
            self.data_prefix = roots
        return data_list
