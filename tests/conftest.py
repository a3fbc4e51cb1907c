"""Shared test setup: import the package once (applies compat fixes and
registers components) and keep torch to the CI machine's two cores."""
import torch

import mmseg_uda  # noqa: F401

torch.set_num_threads(2)
