"""Writers of tiny datasets in the real GTA5 / SYNTHIA / Cityscapes layouts
and encodings, for the data tests."""
import os
import os.path as osp
from typing import Optional

import cv2
import numpy as np
from PIL import Image

# Cityscapes labelId -> trainId (mcordts/cityscapesScripts helpers/labels.py),
# written out by hand so
# the tests do not reuse the code under test.
LABEL_ID_TO_TRAIN_ID = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9,
    23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18
}
# SYNTHIA id -> trainId (lhoyer/DAFormer tools/convert_datasets/synthia.py,
# from SYNTHIA_RAND_CITYSCAPES README.txt).
SYNTHIA_ID_TO_TRAIN_ID = {
    3: 0, 4: 1, 2: 2, 21: 3, 5: 4, 7: 5, 15: 6, 9: 7, 6: 8, 16: 9, 1: 10,
    10: 11, 17: 12, 8: 13, 18: 14, 19: 15, 20: 16, 12: 17, 11: 18
}


def expected_train_ids(ids: np.ndarray, table: dict) -> np.ndarray:
    out = np.full(ids.shape, 255, dtype=np.uint8)
    for src, dst in table.items():
        out[ids == src] = dst
    return out


def random_image(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def write_rgb(path: str, image: np.ndarray) -> None:
    os.makedirs(osp.dirname(path), exist_ok=True)
    Image.fromarray(image).save(path)


def write_paletted(path: str, label_ids: np.ndarray) -> None:
    """8-bit paletted PNG whose indices are the labelIds (as GTA5's)."""
    os.makedirs(osp.dirname(path), exist_ok=True)
    img = Image.fromarray(label_ids.astype(np.uint8), mode='L').convert('P')
    palette = []
    for i in range(256):
        palette += [(i * 37) % 256, (i * 91) % 256, (i * 53) % 256]
    img.putpalette(palette)
    img.save(path)


def write_gray(path: str, array: np.ndarray) -> None:
    os.makedirs(osp.dirname(path), exist_ok=True)
    Image.fromarray(array.astype(np.uint8), mode='L').save(path)


def write_synthia_label(path: str, ids: np.ndarray,
                        instance: Optional[np.ndarray] = None) -> None:
    """16-bit 3-channel PNG: class id in R, instance id in G, 0..? in B."""
    os.makedirs(osp.dirname(path), exist_ok=True)
    h, w = ids.shape
    if instance is None:
        instance = (np.arange(h * w).reshape(h, w) * 7 + 1000) % 65535
    bgr = np.stack([np.full((h, w), 42), instance, ids], axis=2)
    assert cv2.imwrite(path, bgr.astype(np.uint16))


def make_gta(root: str,
             label_ids,
             size=(24, 32),
             seed: int = 0,
             paletted: bool = True) -> list:
    """GTA5 layout: images/NNNNN.png + labels/NNNNN.png (labelIds).

    ``label_ids``: list of HxW arrays (one per image) or an int (number of
    random labels). Returns the label arrays.
    """
    rng = np.random.default_rng(seed)
    if isinstance(label_ids, int):
        label_ids = [
            rng.integers(0, 34, size, dtype=np.uint8)
            for _ in range(label_ids)
        ]
    for i, ids in enumerate(label_ids, start=1):
        h, w = ids.shape
        write_rgb(osp.join(root, 'images', f'{i:05d}.png'),
                  random_image(rng, h, w))
        writer = write_paletted if paletted else write_gray
        writer(osp.join(root, 'labels', f'{i:05d}.png'), ids)
    return label_ids


def make_synthia(root: str, label_ids, seed: int = 0) -> list:
    """SYNTHIA-RAND-CITYSCAPES layout: RGB/NNNNNNN.png + GT/LABELS/NNNNNNN.png
    (16-bit, 3 channels, id in R)."""
    rng = np.random.default_rng(seed)
    for i, ids in enumerate(label_ids):
        h, w = ids.shape
        write_rgb(osp.join(root, 'RGB', f'{i:07d}.png'),
                  random_image(rng, h, w))
        write_synthia_label(osp.join(root, 'GT', 'LABELS', f'{i:07d}.png'),
                            ids)
    return label_ids


def make_cityscapes(root: str,
                    num_train: int = 3,
                    num_val: int = 2,
                    size=(16, 32),
                    seed: int = 0) -> dict:
    """Cityscapes layout: leftImg8bit/{split}/<city>/*_leftImg8bit.png and
    gtFine/{split}/<city>/*_gtFine_labelIds.png (plus a colour file the
    converter must ignore). Returns {split: [labelIds arrays]}."""
    rng = np.random.default_rng(seed)
    out = {}
    for split, num, city in (('train', num_train, 'aachen'),
                             ('val', num_val, 'frankfurt')):
        out[split] = []
        for i in range(num):
            stem = f'{city}_000000_{i:06d}'
            ids = rng.integers(0, 34, size, dtype=np.uint8)
            write_rgb(
                osp.join(root, 'leftImg8bit', split, city,
                         f'{stem}_leftImg8bit.png'),
                random_image(rng, *size))
            write_gray(
                osp.join(root, 'gtFine', split, city,
                         f'{stem}_gtFine_labelIds.png'), ids)
            write_rgb(
                osp.join(root, 'gtFine', split, city,
                         f'{stem}_gtFine_color.png'),
                random_image(rng, *size))
            out[split].append(ids)
    return out
