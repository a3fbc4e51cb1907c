"""Datasets: GTA5 and SYNTHIA sources, the paired UDA dataset with
rare-class sampling, its sampler, and the label converters' logic.
Importing this package registers ``ACDCDataset``, ``GTAVDataset``,
``SynthiaDataset``, ``UDADataset`` (mmseg ``DATASETS``) and
``UDAPairSampler`` (mmseg ``DATA_SAMPLERS``). mmseg's own
``CityscapesDataset`` and ``DarkZurichDataset`` are targets."""
from . import transforms  # noqa: F401
from .acdc import ACDCDataset
from .converted_label_dataset import ConvertedLabelDataset
from .gta import GTAVDataset
from .samplers import UDAPairSampler
from .synthia import SynthiaDataset
from .uda_dataset import UDADataset

__all__ = [
    'ACDCDataset', 'ConvertedLabelDataset', 'GTAVDataset', 'SynthiaDataset',
    'UDADataset', 'UDAPairSampler'
]
