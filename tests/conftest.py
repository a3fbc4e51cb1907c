"""Shared test setup: import the package once (applies compat fixes and
registers components), use mmseg's registry scope as configs do
(``default_scope='mmseg'``), and keep torch to the CI machine's 2 cores."""
import os
import sys

import torch
from mmengine.registry import init_default_scope

sys.path.insert(0, os.path.dirname(__file__))

import mmseg_uda  # noqa: E402,F401

init_default_scope('mmseg')
torch.set_num_threads(2)
