"""Datasets: GTA5 and SYNTHIA sources, the paired UDA dataset with
rare-class sampling, its sampler, and the label converters' logic.
Importing this package registers ``GTAVDataset``, ``SynthiaDataset``,
``UDADataset`` (mmseg ``DATASETS``) and ``UDAPairSampler`` (mmseg
``DATA_SAMPLERS``). mmseg's own ``CityscapesDataset`` is the target."""
from . import transforms  # noqa: F401
from .converted_label_dataset import ConvertedLabelDataset
from .gta import GTAVDataset
from .samplers import UDAPairSampler
from .synthia import SynthiaDataset
from .uda_dataset import UDADataset

__all__ = [
    'ConvertedLabelDataset', 'GTAVDataset', 'SynthiaDataset', 'UDADataset',
    'UDAPairSampler'
]
