"""Base class of UDA method components plugged into ``UDASegmentor``."""
from abc import abstractmethod
from typing import Dict, List, Optional, Sequence

from mmengine.model import BaseModule
from torch import Tensor, nn

from .context import UDAContext


class BaseUDAMethod(BaseModule):
    """A domain-adaptation component of :class:`UDASegmentor`.

    A method declares what it needs and returns named losses; the segmentor
    does the forwarding, sums the losses, and steps the optimizers once per
    iteration. Methods compose: ``methods=[dict(type='SelfTraining'),
    dict(type='T2S')]`` runs both on the same cached forward passes.

    Class/instance attributes a subclass sets:
        requires_teacher (bool): the segmentor builds an EMA teacher
            (updated by ``EMATeacherHook``).
        student_domains (tuple): domains whose student outputs the method
            uses; the segmentor forwards them together (shared BN) or one by
            one (``bn_mode='separate'``) before calling any method.
        needs_feat (bool): the decode head's pre-classifier feature is
            captured during the student forward.

    Loss names: keys containing ``loss`` are summed into the objective, any
    other key is only logged. All keys get ``loss_prefix`` + '.' in front
    (default: the lower-cased class name) so several methods never collide.

    Args:
        loss_prefix (str, optional): prefix of the logged keys; '' for none.
        init_cfg (dict, optional): mmengine initialisation config.
    """
    requires_teacher: bool = False
    student_domains: Sequence[str] = ('source', )
    needs_feat: bool = False

    def __init__(self,
                 loss_prefix: Optional[str] = None,
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        self.loss_prefix = type(self).__name__.lower() \
            if loss_prefix is None else loss_prefix

    @abstractmethod
    def loss(self, ctx: UDAContext) -> Dict[str, Tensor]:
        """Losses (and logged scalars) for the segmentation network and any
        method-owned module trained with it (e.g. a grouping network)."""

    def discriminator_loss(self, ctx: UDAContext) -> Dict[str, Tensor]:
        """Losses for the method's discriminators, stepped by the separate
        ``discriminator`` optimizer. Called after :meth:`loss` in the same
        forward. Its graph must not reach segmentor parameters (use detached
        inputs)."""
        return {}

    def discriminators(self) -> List[nn.Module]:
        """Modules optimised by the ``discriminator`` optimizer."""
        return []

    def frozen_modules(self) -> List[nn.Module]:
        """Method-owned modules that are never optimised (e.g. a frozen
        ImageNet encoder copy); excluded from every optimizer."""
        return []

    def test_encode_decode(self, model, inputs: Tensor,
                           batch_img_metas: List[dict]) -> Optional[Tensor]:
        """Test-time override of ``model.encode_decode`` (e.g. PLCA's
        spatial aggregation). Return None to keep the model's own."""
        return None
