"""Training losses of the seed papers (torch), one module per paper; see METHODS.md.

Conventions (all losses): tensors are ``(B, C, Z, Y, X)``; predictions are **logits** by default
(``activation="sigmoid"``, or ``"softmax"`` for multi-class logits); pass ``activation=None`` to
give probabilities instead. Targets are masks of the same shape unless stated. Losses upcast
float16/bfloat16 inputs to float32 and run with autocast disabled (float64 stays float64), so
they are safe to call inside ``torch.autocast`` regions. Distance maps are in mm. Predictions
(and boundary distance maps) holding NaN or inf are refused with a ValueError naming them;
:func:`allow_non_finite` turns that off for a loop that checks the loss itself.

- :mod:`.cldice`: :class:`SoftDiceLoss`, :class:`SoftclDiceLoss`, :class:`DiceclDiceLoss`,
  :func:`skeleton_iterations` (clDice, CVPR 2021).
- :mod:`.ddt`: :class:`DDTLoss` (``L_cls + L_dis``, Deep Distance Transform, CVPR 2020).
- :mod:`.boundary`: :class:`BoundaryLoss`, :class:`GeneralizedDiceLoss` (wraps MONAI's),
  :class:`BoundaryAlphaScheduler`, :class:`GDLBoundaryLoss` (MIDL 2019).
- :mod:`.shape_aware`: :class:`LRNet`, :func:`pretrain_lrnet`, :class:`ShapeAwareLoss`,
  :class:`MapDiceLoss`.
- :mod:`.deep_supervision`: :class:`DeepSupervisionLoss`, :func:`multilabel_pyramid_targets`,
  :class:`MeanTeacher` (CVPR 2021).
- :mod:`.distribution_balanced`: :class:`DistributionBalancedLoss` (ECCV 2020).
"""

from ._common import allow_non_finite
from .boundary import BoundaryAlphaScheduler, BoundaryLoss, GDLBoundaryLoss, GeneralizedDiceLoss
from .cldice import DiceclDiceLoss, SoftclDiceLoss, SoftDiceLoss, skeleton_iterations
from .ddt import DDTLoss
from .deep_supervision import DeepSupervisionLoss, MeanTeacher, multilabel_pyramid_targets
from .distribution_balanced import DistributionBalancedLoss
from .shape_aware import LRNet, MapDiceLoss, ShapeAwareLoss, pretrain_lrnet

__all__ = [
    "allow_non_finite",
    "BoundaryAlphaScheduler",
    "BoundaryLoss",
    "DDTLoss",
    "DeepSupervisionLoss",
    "DiceclDiceLoss",
    "DistributionBalancedLoss",
    "GDLBoundaryLoss",
    "GeneralizedDiceLoss",
    "LRNet",
    "MapDiceLoss",
    "MeanTeacher",
    "ShapeAwareLoss",
    "SoftDiceLoss",
    "SoftclDiceLoss",
    "multilabel_pyramid_targets",
    "pretrain_lrnet",
    "skeleton_iterations",
]
