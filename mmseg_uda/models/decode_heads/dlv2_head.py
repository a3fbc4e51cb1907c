"""DeepLab-V2 ASPP classifier head (Chen et al., TPAMI 2018).

Variants used by the UDA methods of this package:

- PLCA (``model/segmentation/deeplabv2.py``): four 3×3 convs with dilations
  (6, 12, 18, 24), ``bias=False``, all four summed.
- AdaptSegNet / CDGA lineage (``model/deeplab_multi.py::Classifier_Module``):
  the same four convs with bias, but an early ``return`` inside the summation
  loop means only dilations 6 and 12 contribute (``adaptsegnet_early_return``
  below).
- DAFormer (``mmseg/models/decode_heads/dlv2_head.py``): configurable
  dilations, bias on; DAFormer's ``deeplabv2red`` configs set
  ``dilations=(6, 12)`` to reproduce the AdaptSegNet behaviour.
"""
from typing import List, Sequence, Tuple, Union

import torch.nn as nn
from mmcv.cnn import build_conv_layer
from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from torch import Tensor

from mmseg_uda.registry import MODELS


@MODELS.register_module()
class DLV2Head(BaseDecodeHead):
    """DeepLab-V2 ASPP classifier: parallel dilated 3×3 convs from the
    backbone feature straight to class logits, outputs summed.

    ``logits = sum_i conv_i(x)`` where ``conv_i`` is a 3×3 conv
    ``in_channels → num_classes`` with dilation ``d_i`` and padding ``d_i``
    (spatial size preserved). There is no norm, activation, dropout or 1×1
    ``conv_seg``: the ASPP convs *are* the classifier, so ``cls_seg`` is the
    ASPP sum and ``_forward_feature`` returns the selected backbone stage.
    ``forward(x) == cls_seg(_forward_feature(x))``; UDA methods that need the
    pre-classifier feature (PLCA's feature-level association uses the 2048-ch
    layer4 map) call the two halves separately.

    Args:
        dilations (Sequence[int]): Dilation (= padding) of each parallel
            conv. Defaults to (6, 12, 18, 24).
        bias (bool): Conv bias. PLCA: False; AdaptSegNet/DAFormer: True.
            Defaults to True.
        adaptsegnet_early_return (bool): Reproduce AdaptSegNet's
            ``Classifier_Module.forward``, whose ``return`` sits inside the
            loop, so only the first two dilations are summed although four
            are declared. Only those two convs are built (the other two
            would never receive gradients, which breaks DDP without
            ``find_unused_parameters``); when importing an AdaptSegNet
            checkpoint, drop its ``conv2d_list.2``/``.3`` weights. Equivalent
            to ``dilations=dilations[:2]``. Defaults to False.
        **kwargs: ``BaseDecodeHead`` arguments (``in_channels``,
            ``in_index``, ``num_classes``, ``loss_decode``, ...).
            ``channels``, ``dropout_ratio`` and ``norm_cfg`` are fixed by the
            architecture and must not be given.
    """

    def __init__(self,
                 dilations: Sequence[int] = (6, 12, 18, 24),
                 bias: bool = True,
                 adaptsegnet_early_return: bool = False,
                 init_cfg: Union[dict, List[dict]] = dict(
                     type='Normal', std=0.01,
                     override=dict(name='aspp_modules')),
                 **kwargs) -> None:
        for fixed in ('channels', 'dropout_ratio', 'norm_cfg'):
            if fixed in kwargs:
                raise TypeError(f'DLV2Head has no configurable "{fixed}": '
                                'the dilated convs map the backbone feature '
                                'straight to class logits')
        if not isinstance(dilations, (list, tuple)) or not dilations:
            raise TypeError('dilations must be a non-empty list/tuple, got '
                            f'{dilations!r}')
        if adaptsegnet_early_return and len(dilations) < 2:
            raise ValueError('adaptsegnet_early_return needs at least two '
                             'dilations')
        # channels only sizes BaseDecodeHead's conv_seg, deleted below.
        super().__init__(
            channels=1,
            dropout_ratio=0,
            norm_cfg=None,
            init_cfg=init_cfg,
            **kwargs)
        del self.conv_seg
        if isinstance(self.in_channels, (list, tuple)):
            raise TypeError('DLV2Head needs a single input feature map '
                            "(input_transform None or 'resize_concat')")
        self.dilations = tuple(dilations)
        # Not ``self.bias``: mmengine's whole-module initialisers treat a
        # ``bias`` attribute as a tensor.
        self.conv_bias = bias
        self.adaptsegnet_early_return = adaptsegnet_early_return
        self.effective_dilations = (
            self.dilations[:2] if adaptsegnet_early_return else self.dilations)
        self.aspp_modules = nn.ModuleList(
            build_conv_layer(
                self.conv_cfg,
                self.in_channels,
                self.out_channels,
                kernel_size=3,
                padding=dilation,
                dilation=dilation,
                bias=bias) for dilation in self.effective_dilations)

    def _forward_feature(self, inputs: Tuple[Tensor]) -> Tensor:
        """The head's input feature: the backbone stage(s) chosen by
        ``in_index``/``input_transform`` (layer4, 2048 ch, for DeepLab-V2)."""
        return self._transform_inputs(inputs)

    def cls_seg(self, feat: Tensor) -> Tensor:
        """Class logits: sum of the dilated convs applied to ``feat``."""
        logits = self.aspp_modules[0](feat)
        for conv in self.aspp_modules[1:]:
            logits = logits + conv(feat)
        return logits

    def forward(self, inputs: Tuple[Tensor]) -> Tensor:
        """Logits at the feature's resolution."""
        return self.cls_seg(self._forward_feature(inputs))
