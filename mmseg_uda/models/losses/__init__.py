from .class_balance_loss import ClassBalanceLoss
from .cluster_orthogonality_loss import ClusterOrthogonalityLoss
from .group_statistics import (all_reduce_sum, group_class_distributions,
                               one_hot_labels)
from .semantic_consistency_loss import SemanticConsistencyLoss
from .t2s_contrastive_loss import T2SContrastiveLoss, T2SLossOutput

__all__ = [
    'ClassBalanceLoss', 'ClusterOrthogonalityLoss', 'SemanticConsistencyLoss',
    'T2SContrastiveLoss', 'T2SLossOutput', 'all_reduce_sum',
    'group_class_distributions', 'one_hot_labels'
]
