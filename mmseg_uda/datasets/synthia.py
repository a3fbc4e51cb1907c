"""SYNTHIA-RAND-CITYSCAPES (Ros et al., CVPR 2016) as a source domain."""
from mmseg_uda.registry import DATASETS
from .converted_label_dataset import ConvertedLabelDataset


@DATASETS.register_module()
class SynthiaDataset(ConvertedLabelDataset):
    """SYNTHIA-RAND-CITYSCAPES with labels converted to Cityscapes trainIds.

    Layout (SYNTHIA-RAND-CITYSCAPES, Ros et al., CVPR 2016: 9,400 pairs)::

        DATA_ROOT/RGB/0000000.png                      RGB image
        DATA_ROOT/GT/LABELS/0000000.png                16-bit, 3 channels,
                                                       class id in R
        DATA_ROOT/GT/LABELS/0000000_labelTrainIds.png  converted label

    Labels are converted by ``tools/dataset_converters/synthia.py``.

    SYNTHIA has no terrain, truck or train: the 19-class label space is
    kept and those classes never occur (report mIoU16 / mIoU13).
    """
    CONVERTER = 'synthia'
    ORIGINAL_LABEL_SUFFIX = '.png'

    def __init__(self,
                 img_suffix: str = '.png',
                 seg_map_suffix: str = '_labelTrainIds.png',
                 data_prefix: dict = dict(
                     img_path='RGB', seg_map_path='GT/LABELS'),
                 **kwargs) -> None:
        super().__init__(
            img_suffix=img_suffix,
            seg_map_suffix=seg_map_suffix,
            data_prefix=data_prefix,
            **kwargs)
