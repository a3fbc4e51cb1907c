"""Debug pictures of UDA training (DAFormer-style debug figures)."""
import os
import os.path as osp
from typing import Dict, Optional, Sequence

import cv2
import numpy as np
import torch
from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from mmseg_uda.registry import HOOKS


def _fallback_palette(n: int = 256) -> np.ndarray:
    rng = np.random.RandomState(3)
    palette = rng.randint(0, 256, size=(n, 3), dtype=np.int64)
    return palette.astype(np.uint8)


def colorize(label_map: np.ndarray,
             palette: Optional[Sequence] = None) -> np.ndarray:
    """(H, W) integer map -> (H, W, 3) RGB; 255 (ignore) is black."""
    lut = _fallback_palette()
    if palette is not None:
        pal = np.asarray(palette, dtype=np.uint8)[:255]
        lut[:len(pal)] = pal
    lut[255] = 0
    return lut[np.clip(label_map, 0, 255)]


def compose_debug_grid(maps: Dict[str, torch.Tensor],
                       palette: Optional[Sequence] = None,
                       max_samples: int = 2,
                       tile_height: int = 160) -> np.ndarray:
    """One row per sample, one titled tile per map, as an RGB uint8 image.

    Images are (B, 3, H, W) uint8; label/group maps are (B, H, W) integers.
    Maps whose name contains ``group`` use a fixed palette (they are not
    classes).
    """
    rows = []
    batch = min(v.shape[0] for v in maps.values())
    for b in range(min(batch, max_samples)):
        tiles = []
        for name, value in maps.items():
            arr = value[b].detach().cpu()
            if arr.dim() == 3:
                tile = arr.permute(1, 2, 0).numpy().astype(np.uint8)
                interp = cv2.INTER_LINEAR
            else:
                pal = None if 'group' in name else palette
                tile = colorize(arr.numpy().astype(np.int64), pal)
                interp = cv2.INTER_NEAREST
            h, w = tile.shape[:2]
            width = max(1, round(w * tile_height / h))
            tile = cv2.resize(tile, (width, tile_height),
                              interpolation=interp)
            tile = np.ascontiguousarray(tile)
            cv2.putText(tile, name, (3, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                        (255, 255, 255), 1, cv2.LINE_AA)
            tiles.append(tile)
            tiles.append(np.zeros((tile_height, 2, 3), np.uint8))
        rows.append(np.concatenate(tiles[:-1], axis=1))
    width = max(r.shape[1] for r in rows)
    rows = [
        np.pad(r, ((0, 2), (0, width - r.shape[1]), (0, 0))) for r in rows
    ]
    return np.concatenate(rows, axis=0)


@HOOKS.register_module()
class UDADebugVisualizationHook(Hook):
    """Every ``interval`` iterations, draw source image / label /
    prediction, target image / prediction and every map the methods
    recorded (group assignments, pseudo-labels, mixed images, ...).

    The picture is written to ``<work_dir>/<out_dir>/iter_<N>.png`` and sent
    to the visualizer's backends (``add_image``, e.g. TensorBoard/W&B when
    configured). Maps are only collected on the iterations drawn.

    Args:
        interval (int): draw every ``interval`` iterations.
        max_samples (int): rows (samples of the batch) to draw.
        out_dir (str): folder under the work dir.
    """
    priority = 'LOW'

    def __init__(self,
                 interval: int = 1000,
                 max_samples: int = 2,
                 out_dir: str = 'debug'):
        self.interval = interval
        self.max_samples = max_samples
        self.out_dir = out_dir

    @staticmethod
    def _model(runner):
        return runner.model.module if is_model_wrapper(runner.model) \
            else runner.model

    def before_train_iter(self, runner, batch_idx: int,
                          data_batch=None) -> None:
        self._model(runner).debug_enabled = \
            (runner.iter + 1) % self.interval == 0

    def after_train_iter(self,
                         runner,
                         batch_idx: int,
                         data_batch=None,
                         outputs=None) -> None:
        model = self._model(runner)
        if not model.debug_enabled:
            return
        model.debug_enabled = False
        maps, model.debug_maps = model.debug_maps, {}
        if not maps or not is_main_process():
            return
        palette = None
        dataset = getattr(runner.train_dataloader, 'dataset', None)
        if dataset is not None:
            palette = getattr(dataset, 'metainfo', {}).get('palette')
        grid = compose_debug_grid(maps, palette, self.max_samples)
        step = runner.iter + 1
        folder = osp.join(runner.work_dir, self.out_dir)
        os.makedirs(folder, exist_ok=True)
        cv2.imwrite(
            osp.join(folder, f'iter_{step}.png'), grid[..., ::-1].copy())
        runner.visualizer.add_image('uda_debug', grid, step=step)
