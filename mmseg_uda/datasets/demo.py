"""The built-in demo data: a tiny synthetic-to-"real" street-scene pair.

``tools/make_demo_data.py`` writes, in the real on-disk layouts and label
encodings (so the real converters and datasets run on it unchanged)::

    OUT/gta/images/00001.png                 source images (144x256)
    OUT/gta/labels/00001.png                 paletted Cityscapes labelIds
    OUT/gta/{train,val}.txt                  source split (val: to measure
                                             source-only on source)
    OUT/cityscapes/leftImg8bit/{train,val}/democity/
        democity_000000_0000NN_leftImg8bit.png        target images (128x256)
    OUT/cityscapes/gtFine/{train,val}/democity/
        democity_000000_0000NN_gtFine_labelIds.png    labelIds

Both domains draw scenes from one geometric model (same shapes and
classes, different appearance): sky above a horizon, a road trapezoid towards a
vanishing point with grass verges, rectangular buildings with window grids
standing on the horizon, round trees on trunks, wide cars with a cabin and
wheels on the road, tall persons with a head and two legs. Six classes
(road, building, vegetation, sky, person, car) with large objects and
roughly balanced pixel shares; class identity follows from shape and
position. Domains differ only in appearance:

* source ("GTA"): flat colours drawn from class-typical palettes, smooth
  gradients for sky, road and grass;
* target ("Cityscapes"): every region filled with a patch of a natural
  image shipped with scikit-image (blurred for the sky), mixed with a
  desaturated version of the flat rendering (or, for some regions, the
  MNIST-M blend |patch - flat|), then a global colour shift, blur and
  noise.

The appearance gap was tuned so that a small CNN trained on the source
alone is far worse on the target than on the source, while the same CNN
trained on target labels does almost as well as on the source: the
target stays learnable from shape, and adaptation has room to work.

Everything is a function of ``seed`` and the image index (each image has
its own ``numpy`` generator), so the output does not depend on ``nproc``.
"""
import os
import os.path as osp
from typing import Dict, List, Optional, Tuple

import cv2
import numpy as np

from .conversion import encode_png

# Demo classes: (Cityscapes name, labelId, trainId).
DEMO_CLASSES: Tuple[Tuple[str, int, int], ...] = (
    ('road', 7, 0),
    ('building', 11, 2),
    ('vegetation', 21, 8),
    ('sky', 23, 10),
    ('person', 24, 11),
    ('car', 26, 13),
)
ROAD, BUILDING, VEGETATION, SKY, PERSON, CAR = range(len(DEMO_CLASSES))
DEMO_LABEL_IDS = np.array([c[1] for c in DEMO_CLASSES], dtype=np.uint8)
DEMO_TRAIN_IDS = tuple(c[2] for c in DEMO_CLASSES)

SOURCE_SIZE = (144, 256)  # (height, width); GTA5's wider aspect, scaled
TARGET_SIZE = (128, 256)  # Cityscapes' 2:1, scaled
CITY = 'democity'

# Natural images shipped inside scikit-image (no download needed).
TEXTURE_IMAGES = ('astronaut', 'coffee', 'chelsea', 'rocket',
                  'hubble_deep_field', 'retina', 'immunohistochemistry',
                  'grass', 'gravel', 'brick', 'camera', 'coins', 'moon',
                  'cat', 'clock', 'cell')


# --------------------------------------------------------------------------
# Scene geometry (shared by both domains)
# --------------------------------------------------------------------------
class Scene:
    """Instance map of one scene: ``instances[i] = (class, part)`` for the
    pixels where ``index == i``; ``part`` tells the renderer which colour
    family a region uses (a window is part of a building)."""

    def __init__(self, height: int, width: int) -> None:
        self.height, self.width = height, width
        self.index = np.zeros((height, width), dtype=np.int32)
        self.instances: List[Tuple[int, str]] = []
        self.horizon = 0

    def new(self, cls: int, part: str) -> int:
        self.instances.append((cls, part))
        return len(self.instances) - 1

    def poly(self, points, cls: int, part: str) -> int:
        i = self.new(cls, part)
        pts = np.round(np.asarray(points, dtype=np.float64)).astype(np.int32)
        cv2.fillPoly(self.index, [pts], int(i))
        return i

    def rect(self, x0, y0, x1, y1, cls: int, part: str) -> int:
        return self.poly([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], cls, part)

    def ellipse(self, cx, cy, rx, ry, cls: int, part: str) -> int:
        i = self.new(cls, part)
        cv2.ellipse(self.index, (int(round(cx)), int(round(cy))),
                    (max(1, int(round(rx))), max(1, int(round(ry)))), 0, 0,
                    360, int(i), -1)
        return i

    def labels(self) -> np.ndarray:
        """Demo class index per pixel."""
        classes = np.array([c for c, _ in self.instances], dtype=np.uint8)
        return classes[self.index]


def _draw_building_row(scene: Scene, rng: np.random.Generator) -> None:
    h, w, yh = scene.height, scene.width, scene.horizon
    x = rng.uniform(-0.1, 0.0) * w
    while x < w:
        bw = rng.uniform(0.13, 0.3) * w
        if rng.random() < 0.8:
            top = yh - rng.uniform(0.16, 0.4) * h
            bottom = yh + rng.uniform(0.0, 0.04) * h
            scene.rect(x, top, x + bw, bottom, BUILDING, 'wall')
            # Window grid: the building's own texture of shapes.
            win_w, win_h = rng.uniform(0.02, 0.035) * w, rng.uniform(
                0.03, 0.05) * h
            gap_x, gap_y = win_w * rng.uniform(0.8, 1.5), win_h * rng.uniform(
                0.8, 1.4)
            yy = top + gap_y
            while yy + win_h < bottom - gap_y:
                xx = x + gap_x
                while xx + win_w < x + bw - gap_x * 0.5:
                    scene.rect(xx, yy, xx + win_w, yy + win_h, BUILDING,
                               'window')
                    xx += win_w + gap_x
                yy += win_h + gap_y
        x += bw + rng.uniform(0.0, 0.12) * w


def _draw_tree(scene: Scene, rng: np.random.Generator) -> None:
    h, w, yh = scene.height, scene.width, scene.horizon
    cx = rng.uniform(0.0, 1.0) * w
    base = yh + rng.uniform(0.0, 0.12) * h
    trunk_h = rng.uniform(0.08, 0.16) * h
    trunk_w = rng.uniform(0.012, 0.022) * w
    scene.rect(cx - trunk_w, base - trunk_h - 2, cx + trunk_w, base,
               VEGETATION, 'trunk')
    ry = rng.uniform(0.1, 0.17) * h
    rx = ry * rng.uniform(0.9, 1.4)
    scene.ellipse(cx, base - trunk_h - ry * 0.8, rx, ry, VEGETATION, 'crown')


def _perspective(scene: Scene, y: float) -> float:
    """Object scale at image row ``y`` (1 at the bottom, 0 at horizon)."""
    return max(0.05, (y - scene.horizon) / (scene.height - scene.horizon))


def _draw_car(scene: Scene, rng: np.random.Generator, bottom: float,
              road) -> None:
    w = scene.width
    s = _perspective(scene, bottom)
    car_w = s * rng.uniform(0.42, 0.58) * w
    xv, top_half, bottom_half = road
    half = top_half + (bottom_half - top_half) * s
    cx = xv + rng.uniform(-0.75, 0.75) * half
    body_h = car_w * rng.uniform(0.26, 0.32)
    x0, x1 = cx - car_w / 2, cx + car_w / 2
    wheel_r = car_w * 0.1
    body_bottom = bottom - wheel_r * 0.8
    body_top = body_bottom - body_h
    cab_h = car_w * rng.uniform(0.18, 0.24)
    cab = [(x0 + car_w * 0.22, body_top - cab_h),
           (x1 - car_w * 0.28, body_top - cab_h),
           (x1 - car_w * 0.12, body_top + 1),
           (x0 + car_w * 0.08, body_top + 1)]
    scene.poly(cab, CAR, 'body')
    scene.rect(x0, body_top, x1, body_bottom, CAR, 'body')
    # Side windows inside the cabin.
    inset = cab_h * 0.2
    scene.poly([(cab[0][0] + inset, cab[0][1] + inset),
                (cab[1][0] - inset, cab[1][1] + inset),
                (cab[2][0] - inset * 1.5, cab[2][1] - inset * 0.5),
                (cab[3][0] + inset * 1.5, cab[3][1] - inset * 0.5)], CAR,
               'glass')
    for fx in (0.2, 0.8):
        scene.ellipse(x0 + car_w * fx, body_bottom, wheel_r, wheel_r, CAR,
                      'wheel')


def _draw_person(scene: Scene, rng: np.random.Generator,
                 bottom: float) -> None:
    h, w = scene.height, scene.width
    s = _perspective(scene, bottom)
    ph = s * rng.uniform(0.62, 0.8) * h
    pw = ph * rng.uniform(0.3, 0.38)
    cx = rng.uniform(0.03, 0.97) * w
    head_r = ph * 0.1
    neck = bottom - ph + 2 * head_r
    hip = bottom - ph * 0.45
    leg_w = pw * 0.36
    scene.rect(cx - leg_w * 1.05, hip - 1, cx - leg_w * 0.05, bottom, PERSON,
               'legs')
    scene.rect(cx + leg_w * 0.05, hip - 1, cx + leg_w * 1.05, bottom, PERSON,
               'legs')
    scene.poly([(cx - pw * 0.5, neck), (cx + pw * 0.5, neck),
                (cx + pw * 0.42, hip), (cx - pw * 0.42, hip)], PERSON, 'torso')
    scene.ellipse(cx, neck - head_r * 0.9, head_r * 0.85, head_r, PERSON,
                  'head')


def make_scene(rng: np.random.Generator, height: int, width: int) -> Scene:
    """Draw one street scene (see module doc)."""
    scene = Scene(height, width)
    scene.new(SKY, 'sky')  # instance 0 fills the image
    yh = int(round(rng.uniform(0.4, 0.5) * height))
    scene.horizon = yh
    scene.rect(-1, yh, width, height, VEGETATION, 'grass')
    xv = rng.uniform(0.35, 0.65) * width
    top_half = rng.uniform(0.04, 0.1) * width
    bottom_half = rng.uniform(0.5, 0.75) * width
    scene.poly([(xv - top_half, yh), (xv + top_half, yh),
                (xv + bottom_half, height), (xv - bottom_half, height)], ROAD,
               'asphalt')
    # Dashed centre line (part of the road).
    for t0 in np.arange(rng.uniform(0.05, 0.2), 1.0, 0.25):
        t1 = min(t0 + 0.12, 1.0)
        y0, y1 = yh + t0 * (height - yh), yh + t1 * (height - yh)
        w0, w1 = 0.006 * width * (1 + 4 * t0), 0.006 * width * (1 + 4 * t1)
        scene.poly([(xv - w0, y0), (xv + w0, y0), (xv + w1, y1),
                    (xv - w1, y1)], ROAD, 'marking')
    _draw_building_row(scene, rng)
    for _ in range(rng.integers(1, 4)):
        _draw_tree(scene, rng)
    road = (xv, top_half, bottom_half)
    objects = [('car', rng.uniform(yh + 0.3 * (height - yh), height * 1.02))
               for _ in range(rng.integers(1, 4))]
    objects += [('person', rng.uniform(yh + 0.35 * (height - yh), height))
                for _ in range(rng.integers(2, 5))]
    for kind, bottom in sorted(objects, key=lambda o: o[1]):  # far first
        if kind == 'car':
            _draw_car(scene, rng, bottom, road)
        else:
            _draw_person(scene, rng, bottom)
    return scene


# --------------------------------------------------------------------------
# Source appearance: flat colours, smooth backgrounds
# --------------------------------------------------------------------------
_PART_COLOURS: Dict[str, List[Tuple[int, int, int]]] = {
    'sky': [(90, 150, 220), (120, 170, 230), (150, 190, 235)],
    'grass': [(70, 140, 50), (95, 160, 60), (60, 120, 40)],
    'asphalt': [(70, 70, 75), (90, 90, 95), (60, 60, 60)],
    'marking': [(235, 235, 235), (230, 210, 80)],
    'wall': [(190, 170, 140), (160, 160, 165), (150, 100, 80),
             (200, 190, 170), (120, 120, 130)],
    'window': [(60, 80, 110), (230, 220, 150), (40, 50, 60)],
    'trunk': [(100, 70, 40), (80, 55, 35)],
    'crown': [(40, 110, 40), (60, 130, 50), (30, 90, 45)],
    'body': [(200, 30, 30), (30, 60, 180), (230, 230, 230), (30, 30, 30),
             (170, 170, 180), (230, 190, 40)],
    'glass': [(50, 70, 90), (90, 120, 140)],
    'wheel': [(20, 20, 20), (35, 35, 35)],
    'torso': [(200, 50, 50), (50, 90, 200), (240, 200, 60), (60, 160, 90),
              (220, 220, 220), (120, 60, 150)],
    'legs': [(40, 40, 70), (70, 60, 50), (30, 30, 30), (90, 90, 120)],
    'head': [(230, 190, 160), (190, 140, 110), (140, 100, 70)],
}
_GRADIENT_PARTS = ('sky', 'grass', 'asphalt')


def _part_colour(rng: np.random.Generator, part: str) -> np.ndarray:
    palette = _PART_COLOURS[part]
    base = np.array(palette[rng.integers(len(palette))], dtype=np.float32)
    return np.clip(base + rng.normal(0, 8, 3), 0, 255)


def render_source(scene: Scene, rng: np.random.Generator) -> np.ndarray:
    """Flat per-region colours; vertical gradients for sky, road, grass."""
    h, w = scene.height, scene.width
    image = np.zeros((h, w, 3), dtype=np.float32)
    ramp = np.linspace(-1.0, 1.0, h, dtype=np.float32)[:, None, None]
    for i, (_, part) in enumerate(scene.instances):
        mask = scene.index == i
        if not mask.any():
            continue
        colour = _part_colour(rng, part)
        if part in _GRADIENT_PARTS:
            layer = colour + ramp * rng.uniform(10, 30) * np.array(
                [1, 1, 1], dtype=np.float32)
            image[mask] = np.broadcast_to(layer, (h, w, 3))[mask]
        else:
            image[mask] = colour
    image += rng.normal(0, 2.0, image.shape).astype(np.float32)
    return np.clip(image, 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------
# Target appearance: natural-image textures, blend, colour shift, blur, noise
# --------------------------------------------------------------------------
_TEXTURES: Optional[List[np.ndarray]] = None


def load_textures() -> List[np.ndarray]:
    """RGB float32 copies of the scikit-image sample images (cached)."""
    global _TEXTURES
    if _TEXTURES is None:
        try:
            import skimage.data
        except ImportError as e:
            raise ImportError(
                'the demo data generator needs scikit-image for its '
                'natural-image textures: pip install -r requirements/demo.txt'
            ) from e
        textures = []
        for name in TEXTURE_IMAGES:
            img = getattr(skimage.data, name)()
            if img.ndim == 2:
                img = np.repeat(img[:, :, None], 3, axis=2)
            img = img[:, :, :3].astype(np.float32)
            # At least 2x the largest demo image so crops vary.
            scale = max(1.0, 320 / min(img.shape[:2]))
            if scale > 1:
                img = cv2.resize(img, None, fx=scale, fy=scale,
                                 interpolation=cv2.INTER_LINEAR)
            textures.append(img)
        _TEXTURES = textures
    return _TEXTURES


def _texture_crop(rng: np.random.Generator, textures, h: int,
                  w: int) -> np.ndarray:
    tex = textures[rng.integers(len(textures))]
    zoom = rng.uniform(0.6, 1.6)
    ch, cw = max(1, int(h / zoom)), max(1, int(w / zoom))
    ch, cw = min(ch, tex.shape[0]), min(cw, tex.shape[1])
    y0 = rng.integers(0, tex.shape[0] - ch + 1)
    x0 = rng.integers(0, tex.shape[1] - cw + 1)
    crop = tex[y0:y0 + ch, x0:x0 + cw]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    return cv2.resize(
        np.ascontiguousarray(crop), (w, h), interpolation=cv2.INTER_LINEAR)


MNISTM_PROB = 0.1
SKY_BLUR = 6.0
FLAT_ALPHA = (0.55, 0.85)


def render_target(scene: Scene, rng: np.random.Generator,
                  textures: List[np.ndarray]) -> np.ndarray:
    """Each region: a natural-image patch blended with a recoloured flat
    rendering (MNIST-M-style |patch - colour| on some regions); then a
    global colour shift, Gaussian blur and noise."""
    h, w = scene.height, scene.width
    flat = render_source(scene, rng).astype(np.float32)
    # Desaturate and recolour the flat rendering: source hues carry over
    # only partly.
    grey = flat.mean(axis=2, keepdims=True)
    flat = grey + rng.uniform(0.5, 0.9) * (flat - grey)
    image = np.zeros((h, w, 3), dtype=np.float32)
    for i in range(len(scene.instances)):
        mask = scene.index == i
        if not mask.any():
            continue
        ys, xs = np.nonzero(mask)
        y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        patch = _texture_crop(rng, textures, y1 - y0, x1 - x0)
        patch *= rng.uniform(0.6, 1.2, 3)  # tint
        if scene.instances[i][1] == 'sky':
            # A sky is smooth (clouds, haze), not a sharp texture.
            patch = cv2.GaussianBlur(patch, (0, 0), SKY_BLUR)
        region = flat[y0:y1, x0:x1]
        if rng.random() < MNISTM_PROB:
            mixed = np.abs(patch - region)  # MNIST-M blend
        else:
            alpha = rng.uniform(*FLAT_ALPHA)
            mixed = (1 - alpha) * patch + alpha * region
        sub = mask[y0:y1, x0:x1]
        image[y0:y1, x0:x1][sub] = mixed[sub]
    gain = rng.uniform(0.75, 1.1, 3) * np.array([1.05, 0.95, 0.85])
    image = image * gain + rng.uniform(-15, 25)
    sigma = rng.uniform(0.6, 1.3)
    image = cv2.GaussianBlur(image, (0, 0), sigma)
    image += rng.normal(0, rng.uniform(4, 10), image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------
# Writing the datasets
# --------------------------------------------------------------------------
def _labelid_palette() -> List[int]:
    """256-entry RGB palette with the Cityscapes colour of each labelId,
    as in the original GTA5 label PNGs."""
    from cityscapesscripts.helpers.labels import labels
    palette = [0] * (256 * 3)
    for label in labels:
        if 0 <= label.id < 256:
            palette[3 * label.id:3 * label.id + 3] = list(label.color)
    return palette


def _encode_paletted(label_ids: np.ndarray) -> bytes:
    from io import BytesIO

    from PIL import Image
    img = Image.fromarray(label_ids, mode='L').convert('P')
    img.putpalette(_labelid_palette())
    buf = BytesIO()
    img.save(buf, format='PNG')
    return buf.getvalue()


def _image_rng(seed: int, domain: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, domain, index])


def _write(path: str, data: bytes) -> None:
    with open(path, 'wb') as f:
        f.write(data)


def make_source_sample(seed: int, index: int,
                       size: Tuple[int, int] = SOURCE_SIZE):
    """(RGB image, labelIds) of source image ``index``."""
    rng = _image_rng(seed, 0, index)
    scene = make_scene(rng, *size)
    return render_source(scene, rng), DEMO_LABEL_IDS[scene.labels()]


def make_target_sample(seed: int, index: int,
                       size: Tuple[int, int] = TARGET_SIZE):
    """(RGB image, labelIds) of target image ``index`` (train and val
    indices are disjoint)."""
    rng = _image_rng(seed, 1, index)
    scene = make_scene(rng, *size)
    return render_target(scene, rng, load_textures()), \
        DEMO_LABEL_IDS[scene.labels()]


def _source_task(task) -> None:
    out_dir, seed, index, size = task
    image, label_ids = make_source_sample(seed, index, size)
    name = f'{index + 1:05d}.png'
    _write(osp.join(out_dir, 'gta', 'images', name), encode_png(image))
    _write(osp.join(out_dir, 'gta', 'labels', name),
           _encode_paletted(label_ids))


def _target_task(task) -> None:
    out_dir, seed, index, split, frame, size = task
    image, label_ids = make_target_sample(seed, index, size)
    stem = f'{CITY}_000000_{frame:06d}'
    _write(
        osp.join(out_dir, 'cityscapes', 'leftImg8bit', split, CITY,
                 f'{stem}_leftImg8bit.png'), encode_png(image))
    _write(
        osp.join(out_dir, 'cityscapes', 'gtFine', split, CITY,
                 f'{stem}_gtFine_labelIds.png'), encode_png(label_ids))


def _run_task(task) -> None:
    (_source_task if task[0] == 'source' else _target_task)(task[1])


def make_demo_data(out_dir: str,
                   seed: int = 0,
                   num_source_train: int = 400,
                   num_source_val: int = 50,
                   num_target_train: int = 400,
                   num_target_val: int = 50,
                   source_size: Tuple[int, int] = SOURCE_SIZE,
                   target_size: Tuple[int, int] = TARGET_SIZE,
                   nproc: int = 1,
                   progress: bool = True) -> Dict[str, int]:
    """Write the demo source (``OUT/gta``) and target (``OUT/cityscapes``)
    datasets; see the module doc. Returns the number of images per part."""
    for sub in ('gta/images', 'gta/labels'):
        os.makedirs(osp.join(out_dir, sub), exist_ok=True)
    for split in ('train', 'val'):
        for top in ('leftImg8bit', 'gtFine'):
            os.makedirs(
                osp.join(out_dir, 'cityscapes', top, split, CITY),
                exist_ok=True)
    load_textures()  # fail early, and let forked workers inherit them
    num_source = num_source_train + num_source_val
    tasks = [('source', (out_dir, seed, i, source_size))
             for i in range(num_source)]
    tasks += [('target', (out_dir, seed, i, 'train', i, target_size))
              for i in range(num_target_train)]
    tasks += [('target', (out_dir, seed, num_target_train + i, 'val', i,
                          target_size)) for i in range(num_target_val)]
    if nproc > 1:
        from mmengine.utils import track_parallel_progress
        track_parallel_progress(_run_task, tasks, nproc, chunksize=8)
    elif progress:
        from mmengine.utils import track_progress
        track_progress(_run_task, tasks)
    else:
        for task in tasks:
            _run_task(task)
    names = [f'{i + 1:05d}' for i in range(num_source)]
    _write(osp.join(out_dir, 'gta', 'train.txt'),
           ''.join(n + '\n' for n in names[:num_source_train]).encode())
    _write(osp.join(out_dir, 'gta', 'val.txt'),
           ''.join(n + '\n' for n in names[num_source_train:]).encode())
    return dict(
        source_train=num_source_train,
        source_val=num_source_val,
        target_train=num_target_train,
        target_val=num_target_val)
