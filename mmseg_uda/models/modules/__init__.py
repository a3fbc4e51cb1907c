from .discriminators import FCDiscriminator
from .grouping import CrossDomainGroupingNetwork
from .projection_head import ProjectionHead

__all__ = ['CrossDomainGroupingNetwork', 'FCDiscriminator', 'ProjectionHead']
