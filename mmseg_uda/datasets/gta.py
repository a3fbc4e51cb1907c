"""GTA5 (Richter et al., ECCV 2016) as a source domain."""
from mmseg_uda.registry import DATASETS
from .converted_label_dataset import ConvertedLabelDataset


@DATASETS.register_module()
class GTAVDataset(ConvertedLabelDataset):
    """GTA5 with labels converted to the 19 Cityscapes trainIds.

    Layout (GTA5, Richter et al., ECCV 2016: 24,966 pairs)::

        DATA_ROOT/images/00001.png                  RGB image
        DATA_ROOT/labels/00001.png                  original labelIds
        DATA_ROOT/labels/00001_labelTrainIds.png    converted label

    Labels are converted by ``tools/dataset_converters/gta.py``.

    Images are listed from ``images/`` only, and only files not ending in
    ``seg_map_suffix``; the original ``labels/00001.png`` is never taken
    for an image or a label. Classes and palette are Cityscapes'.
    """
    CONVERTER = 'gta'
    ORIGINAL_LABEL_SUFFIX = '.png'

    def __init__(self,
                 img_suffix: str = '.png',
                 seg_map_suffix: str = '_labelTrainIds.png',
                 data_prefix: dict = dict(
                     img_path='images', seg_map_path='labels'),
                 **kwargs) -> None:
        super().__init__(
            img_suffix=img_suffix,
            seg_map_suffix=seg_map_suffix,
            data_prefix=data_prefix,
            **kwargs)
