"""mmseg-uda: unsupervised domain adaptive semantic segmentation for
MMSegmentation 1.x.

Importing this package applies the compatibility fixes of
:mod:`mmseg_uda.compat` and registers every component into MMSegmentation's
registries, so configs keep ``default_scope='mmseg'`` and load the package
with ``custom_imports=dict(imports=['mmseg_uda'], allow_failed_imports=False)``.
"""
from .compat import apply_all as _apply_compat

_apply_compat()

from . import datasets, engine, evaluation, models  # noqa: E402,F401
from .version import __version__  # noqa: E402,F401
