from .class_balance_loss import ClassBalanceLoss
from .cluster_orthogonality_loss import ClusterOrthogonalityLoss
from .cycle_association_loss import (CycleAssociation, CycleAssociationLoss,
                                     cycle_associate, spatial_aggregation)
from .distributed_lovasz_loss import (DistributedLovaszSoftmaxLoss,
                                      global_lovasz_softmax)
from .group_class_equivalence_loss import GroupClassEquivalenceLoss
from .group_statistics import (all_reduce_sum, group_class_distributions,
                               one_hot_labels)
from .semantic_consistency_loss import SemanticConsistencyLoss
from .t2s_contrastive_loss import T2SContrastiveLoss, T2SLossOutput
from .uniform_cross_entropy_regularizer import UniformCrossEntropyRegularizer

__all__ = [
    'ClassBalanceLoss', 'ClusterOrthogonalityLoss', 'CycleAssociation',
    'CycleAssociationLoss', 'DistributedLovaszSoftmaxLoss',
    'GroupClassEquivalenceLoss', 'SemanticConsistencyLoss',
    'T2SContrastiveLoss', 'T2SLossOutput', 'UniformCrossEntropyRegularizer',
    'all_reduce_sum', 'cycle_associate', 'global_lovasz_softmax',
    'group_class_distributions', 'one_hot_labels', 'spatial_aggregation'
]
