from .discriminators import FCDiscriminator

__all__ = ['FCDiscriminator']
