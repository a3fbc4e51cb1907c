from .uda_segmentor import UDASegmentor, registered_uda_methods

__all__ = ['UDASegmentor', 'registered_uda_methods']
