"""Backbones (registered into mmseg's ``MODELS``)."""
from .deeplabv2_resnet import DeepLabV2ResNet
from .dinov2 import DINOv2VisionTransformer

__all__ = ['DeepLabV2ResNet', 'DINOv2VisionTransformer']
