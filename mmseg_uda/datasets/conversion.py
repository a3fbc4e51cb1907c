"""Label conversion for GTA5, SYNTHIA-RAND-CITYSCAPES and Cityscapes.

The command-line tools in ``tools/dataset_converters/`` are thin wrappers
around :func:`convert_dataset`. What a run does, per image/label pair:

* labelIds (GTA5, Cityscapes) or SYNTHIA class ids are mapped to the 19
  Cityscapes trainIds (mcordts/cityscapesScripts ``helpers/labels.py``)
  and written next to the original as
  an 8-bit single-channel ``*_labelTrainIds.png`` (255 = ignore). The
  labelId -> trainId table comes from ``cityscapesscripts.helpers.labels``
  (trainId 255 or -1 -> 255); SYNTHIA ids are mapped to Cityscapes label
  *names* and take their trainIds from the same table.
* Every pair is validated: images without label and labels without image
  are reported by name; wrong encodings raise :class:`LabelEncodingError`
  naming the file (a colour GTA label, an 8-bit or single-channel SYNTHIA
  label, SYNTHIA ids outside 0..22).
* Size mismatch rule (some GTA5 labels differ in size from their image,
  e.g. 1046x1914; reported in yzou2/CBST#5): ``'skip'`` (default) writes
  no trainId label for the pair
  and lists it in ``DATA_ROOT/size_mismatch.json``; the datasets skip the
  listed pairs. ``'resize'`` nearest-resizes the label to the image size
  and lists the pair with ``"action": "resized"``.
* Idempotent: an existing trainId label is reused (its pixel counts feed
  the statistics) and nothing is rewritten; JSON files are rewritten only
  when their content changes. Every file is written to a hidden temporary
  name in the same folder and then ``os.replace``-d, so an interrupted run
  never leaves a partial file under a final name; leftover temporary files
  are removed on the next run.
* Rare-class-sampling statistics (DAFormer RCS, Hoyer et al., CVPR 2022;
  lhoyer/DAFormer ``tools/convert_datasets/gta.py``), in
  DAFormer's format but with paths relative to ``DATA_ROOT``:
  ``sample_class_stats.json`` (list of ``{"file": ..., "<trainId>": n}``)
  and ``samples_with_class.json`` (``{"<trainId>": [[file, n], ...]}``).
"""
import json
import os
import os.path as osp
import tempfile
from dataclasses import dataclass, field
from functools import lru_cache
from io import BytesIO
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
from PIL import Image

IGNORE_INDEX = 255
NUM_CLASSES = 19
TRAIN_ID_SUFFIX = '_labelTrainIds.png'
CITYSCAPES_TRAIN_ID_SUFFIX = '_gtFine_labelTrainIds.png'
STATS_FILE = 'sample_class_stats.json'
SAMPLES_WITH_CLASS_FILE = 'samples_with_class.json'
SIZE_MISMATCH_FILE = 'size_mismatch.json'
SIZE_MISMATCH_RULES = ('skip', 'resize')
# Temporary files: hidden, and never ending in '.png', so no listing of
# images or labels can pick one up.
_TMP_SUFFIX = '.tmp'

# SYNTHIA-RAND-CITYSCAPES class ids (README.txt of the dataset; also
# kgl-prml/Pixel-Level-Cycle-Association data/label_map.py) mapped to
# Cityscapes label names. Ids without an entry (0 void, 13 parking-slot,
# 14 road-work, 22 lanemarking) become 255.
SYNTHIA_ID_TO_CITYSCAPES_NAME = {
    1: 'sky',
    2: 'building',
    3: 'road',
    4: 'sidewalk',
    5: 'fence',
    6: 'vegetation',
    7: 'pole',
    8: 'car',
    9: 'traffic sign',
    10: 'person',
    11: 'bicycle',
    12: 'motorcycle',
    15: 'traffic light',
    16: 'terrain',
    17: 'rider',
    18: 'truck',
    19: 'bus',
    20: 'train',
    21: 'wall',
}
SYNTHIA_MAX_ID = 22


class LabelEncodingError(ValueError):
    """A label file is not encoded the way its dataset defines."""


class ConversionError(RuntimeError):
    """A conversion run finished with per-file errors (listed in the
    message); the statistics files were not written."""


def _cityscapes_labels():
    from cityscapesscripts.helpers.labels import labels
    return labels


def _train_id_or_ignore(train_id: int) -> int:
    return IGNORE_INDEX if train_id in (255, -1) else int(train_id)


@lru_cache(maxsize=None)
def label_id_to_train_id_lut() -> np.ndarray:
    """256-entry lookup table labelId -> trainId from cityscapesScripts.

    Ids that cityscapesScripts marks as ignored (trainId 255 or -1) and ids
    it does not define map to 255.
    """
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for label in _cityscapes_labels():
        if 0 <= label.id < 256:
            lut[label.id] = _train_id_or_ignore(label.trainId)
    lut.flags.writeable = False  # cached and shared
    return lut


@lru_cache(maxsize=None)
def synthia_id_to_train_id_lut() -> np.ndarray:
    """Lookup table SYNTHIA id (0..22) -> trainId via Cityscapes names."""
    from cityscapesscripts.helpers.labels import name2label
    lut = np.full(SYNTHIA_MAX_ID + 1, IGNORE_INDEX, dtype=np.uint8)
    for synthia_id, name in SYNTHIA_ID_TO_CITYSCAPES_NAME.items():
        lut[synthia_id] = _train_id_or_ignore(name2label[name].trainId)
    lut.flags.writeable = False  # cached and shared
    return lut


# --------------------------------------------------------------------------
# Reading and validating labels
# --------------------------------------------------------------------------
def read_label_id_png(path: str) -> np.ndarray:
    """Read a Cityscapes-labelIds PNG (GTA5 or Cityscapes ``gtFine``).

    Read with PIL because GTA5 labels are paletted: PIL returns the palette
    indices (= labelIds) whereas cv2 would expand the palette to colours.

    Raises:
        LabelEncodingError: if the file is not 8-bit single-channel
            (paletted or grayscale), e.g. a colour-coded label.
    """
    with Image.open(path) as img:
        mode = img.mode
        if mode not in ('P', 'L'):
            raise LabelEncodingError(
                f'{path}: label has PIL mode "{mode}"; expected an 8-bit '
                'single-channel (paletted or grayscale) PNG of Cityscapes '
                'labelIds. A colour label (RGB) is not usable: use the '
                'labelIds PNGs shipped with the dataset.')
        return np.array(img)


def read_synthia_label(path: str) -> np.ndarray:
    """Read SYNTHIA class ids from the R channel of a 16-bit 3-channel PNG.

    cv2 ``IMREAD_UNCHANGED`` returns BGR order, so R is channel index 2
    (DAFormer reads ``[:, :, -1]``, PLCA the first channel of an RGB read).

    Raises:
        LabelEncodingError: for 8-bit or single-channel files, or ids
            outside 0..22.
    """
    label = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if label is None:
        raise LabelEncodingError(f'{path}: cannot be decoded as an image.')
    if label.dtype != np.uint16 or label.ndim != 3 or label.shape[2] < 3:
        channels = 1 if label.ndim == 2 else label.shape[2]
        raise LabelEncodingError(
            f'{path}: SYNTHIA label is {label.dtype} with {channels} '
            'channel(s); expected the 16-bit 3-channel PNGs of '
            'SYNTHIA-RAND-CITYSCAPES GT/LABELS (class id in the R channel). '
            'Point the converter at the original dataset, not at GT/COLOR '
            'or at converted labels.')
    ids = label[:, :, 2]
    max_id = int(ids.max())
    if max_id > SYNTHIA_MAX_ID:
        raise LabelEncodingError(
            f'{path}: R channel holds class id {max_id}, outside SYNTHIA\'s '
            f'0..{SYNTHIA_MAX_ID}. This is probably the wrong folder '
            '(GT/COLOR instead of GT/LABELS) or the wrong channel (the G '
            'channel holds instance ids).')
    return ids


def read_train_id_png(path: str) -> np.ndarray:
    """Read a converted 8-bit trainId label."""
    with Image.open(path) as img:
        if img.mode not in ('L', 'P'):
            raise LabelEncodingError(
                f'{path}: trainId label has PIL mode "{img.mode}", expected '
                '8-bit single-channel.')
        return np.array(img)


def image_size(path: str) -> Tuple[int, int]:
    """(height, width) from the file header, without decoding pixels."""
    with Image.open(path) as img:
        width, height = img.size
    return height, width


def class_pixel_counts(train_ids: np.ndarray) -> Dict[int, int]:
    """trainId -> pixel count for the classes present (255 excluded)."""
    counts = np.bincount(train_ids.ravel(), minlength=256)[:NUM_CLASSES]
    return {c: int(n) for c, n in enumerate(counts) if n > 0}


# --------------------------------------------------------------------------
# Atomic writes
# --------------------------------------------------------------------------
def _is_stale_temp(name: str) -> bool:
    """A temporary file of :func:`atomic_write_bytes` (``.<name>.X.tmp``)."""
    return name.startswith('.') and name.endswith(_TMP_SUFFIX) and \
        ('.png.' in name or '.json.' in name)


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same
    folder and ``os.replace`` (atomic on POSIX and Windows)."""
    folder, name = osp.split(osp.abspath(path))
    fd, tmp_path = tempfile.mkstemp(
        dir=folder, prefix=f'.{name}.', suffix=_TMP_SUFFIX)
    try:
        with os.fdopen(fd, 'wb') as f:
            f.write(data)
        umask = os.umask(0)
        os.umask(umask)
        # mkstemp creates 0600; give the file the permissions open() would.
        os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, path)
    except BaseException:
        if osp.exists(tmp_path):
            os.remove(tmp_path)
        raise


def encode_png(array: np.ndarray) -> bytes:
    """PNG bytes of a uint8 HxW (grayscale) or HxWx3 (RGB) array."""
    buf = BytesIO()
    Image.fromarray(array).save(buf, format='PNG')
    return buf.getvalue()


def write_png_atomic(path: str, array: np.ndarray) -> None:
    atomic_write_bytes(path, encode_png(array))


def write_json_if_changed(path: str, obj) -> bool:
    """Atomically write ``obj`` as JSON unless the file already holds
    exactly that content. Returns whether the file was written."""
    text = json.dumps(obj, indent=2) + '\n'
    if osp.isfile(path):
        with open(path) as f:
            if f.read() == text:
                return False
    atomic_write_bytes(path, text.encode())
    return True


# --------------------------------------------------------------------------
# Dataset layouts and pair discovery
# --------------------------------------------------------------------------
@dataclass(frozen=True)
class Layout:
    """One image folder / label folder pairing of a dataset.

    Paths are relative to ``DATA_ROOT``; images and labels pair by the path
    below their folder with the suffix removed.
    """
    name: str
    image_dir: str
    label_dir: str
    image_suffix: str
    label_suffix: str
    train_id_suffix: str
    label_reader: str  # key of LABEL_READERS
    with_stats: bool


LABEL_READERS: Dict[str, Callable[[str], np.ndarray]] = {
    'label_ids': read_label_id_png,
    'synthia': read_synthia_label,
}

DATASET_LAYOUTS: Dict[str, Tuple[Layout, ...]] = {
    'gta': (Layout('gta', 'images', 'labels', '.png', '.png', TRAIN_ID_SUFFIX,
                   'label_ids', True), ),
    'synthia': (Layout('synthia', 'RGB', 'GT/LABELS', '.png', '.png',
                       TRAIN_ID_SUFFIX, 'synthia', True), ),
    'cityscapes': tuple(
        Layout(f'cityscapes-{split}', f'leftImg8bit/{split}',
               f'gtFine/{split}', '_leftImg8bit.png', '_gtFine_labelIds.png',
               CITYSCAPES_TRAIN_ID_SUFFIX, 'label_ids', split == 'train')
        for split in ('train', 'val')),
    # ACDC as downloaded (rgb_anon_trainvaltest.zip, gt_trainval.zip):
    # rgb_anon/<condition>/<split>/<sequence>/*_rgb_anon.png with
    # gt/<condition>/<split>/<sequence>/*_gt_labelIds.png (the shipped
    # *_gt_labelTrainIds.png are validated and reused)
    'acdc': tuple(
        Layout(f'acdc-{cond}-{split}', f'rgb_anon/{cond}/{split}',
               f'gt/{cond}/{split}', '_rgb_anon.png', '_gt_labelIds.png',
               '_gt_labelTrainIds.png', 'label_ids', False)
        for cond in ('fog', 'night', 'rain', 'snow')
        for split in ('train', 'val')),
    # Dark Zurich (Dark_Zurich_val_anon.zip): only the night val split has
    # labels; the train images (Dark_Zurich_train_anon.zip) are unlabelled
    'dark_zurich': (Layout('dark_zurich-val', 'rgb_anon/val/night',
                           'gt/val/night', '_rgb_anon.png',
                           '_gt_labelIds.png', '_gt_labelTrainIds.png',
                           'label_ids', False), ),
}

CONVERTER_SCRIPTS = {
    'gta': 'tools/dataset_converters/gta.py',
    'synthia': 'tools/dataset_converters/synthia.py',
    'cityscapes': 'tools/dataset_converters/cityscapes.py',
    'acdc': 'tools/dataset_converters/acdc.py',
    'dark_zurich': 'tools/dataset_converters/dark_zurich.py',
}


def converter_command(dataset: str, data_root: str) -> str:
    """The shell command that converts ``data_root`` (for messages)."""
    return f'python {CONVERTER_SCRIPTS[dataset]} {data_root}'


def list_files(root: str) -> List[str]:
    """Sorted relative paths ('/'-separated) of visible files below root."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith('.'))
        rel_dir = osp.relpath(dirpath, root)
        for name in filenames:
            rel = name if rel_dir == '.' else f'{rel_dir}/{name}'
            found.append(rel.replace(os.sep, '/'))
    return sorted(found)


@dataclass
class PairListing:
    """Result of matching image and label files of one layout."""
    pairs: List[Tuple[str, str, str]] = field(default_factory=list)
    images_without_label: List[str] = field(default_factory=list)
    labels_without_image: List[str] = field(default_factory=list)
    stale_temp_files: List[str] = field(default_factory=list)


def find_pairs(data_root: str, layout: Layout, dataset: str) -> PairListing:
    """Match images and original labels of ``layout`` below ``data_root``.

    Returns ``(image, label, train_id_label)`` triples of paths relative to
    ``data_root``. Hidden files are ignored; the label folder's own
    ``*_labelTrainIds.png`` outputs are not taken for originals even when
    both share the ``.png`` suffix (GTA5, SYNTHIA).
    """
    image_root = osp.join(data_root, layout.image_dir)
    label_root = osp.join(data_root, layout.label_dir)
    for folder, what in ((image_root, 'image'), (label_root, 'label')):
        if not osp.isdir(folder):
            raise FileNotFoundError(
                f'{what} folder "{folder}" does not exist. Expected the '
                f'{dataset} layout below DATA_ROOT "{data_root}" '
                f'({layout.image_dir}/ and {layout.label_dir}/); check the '
                'path you passed.')
    listing = PairListing()
    images = {}
    for rel in list_files(image_root):
        name = osp.basename(rel)
        if name.startswith('.') or not rel.endswith(layout.image_suffix) \
                or rel.endswith(layout.train_id_suffix):
            continue
        images[rel[:-len(layout.image_suffix)]] = rel
    labels = {}
    for rel in list_files(label_root):
        name = osp.basename(rel)
        if name.startswith('.'):
            if _is_stale_temp(name):
                listing.stale_temp_files.append(f'{layout.label_dir}/{rel}')
            continue
        if rel.endswith(layout.train_id_suffix) or \
                not rel.endswith(layout.label_suffix):
            continue
        labels[rel[:-len(layout.label_suffix)]] = rel
    for key in sorted(images):
        if key in labels:
            listing.pairs.append(
                (f'{layout.image_dir}/{images[key]}',
                 f'{layout.label_dir}/{labels[key]}',
                 f'{layout.label_dir}/{key}{layout.train_id_suffix}'))
        else:
            listing.images_without_label.append(
                f'{layout.image_dir}/{images[key]}')
    listing.labels_without_image = [
        f'{layout.label_dir}/{labels[key]}' for key in sorted(labels)
        if key not in images
    ]
    return listing


# --------------------------------------------------------------------------
# Per-pair conversion (runs in worker processes)
# --------------------------------------------------------------------------
def convert_pair(task: tuple) -> dict:
    """Convert one pair; never raises for per-file problems.

    Args:
        task: ``(data_root, label_reader, image, label, train_id_label,
            size_rule)`` with paths relative to ``data_root``.

    Returns:
        dict with ``status`` ('converted', 'existing', 'mismatch_skipped'
        or 'error'), ``file`` (the trainId label), ``counts`` (trainId ->
        pixels), ``mismatch`` (record or None) and ``error`` (message).
    """
    data_root, reader, image_rel, label_rel, out_rel, size_rule = task
    result = dict(status='error', file=out_rel, counts={}, mismatch=None,
                  error=None)
    image_path = osp.join(data_root, image_rel)
    label_path = osp.join(data_root, label_rel)
    out_path = osp.join(data_root, out_rel)
    try:
        image_hw = image_size(image_path)
        label_hw = image_size(label_path)
        if image_hw != label_hw:
            result['mismatch'] = dict(
                image=image_rel, label=label_rel, image_size=list(image_hw),
                label_size=list(label_hw),
                action='skipped' if size_rule == 'skip' else 'resized')
            if size_rule == 'skip':
                result['status'] = 'mismatch_skipped'
                return result
        if osp.isfile(out_path):
            existing = _read_existing(out_path, image_hw)
            if existing is not None:
                result.update(status='existing',
                              counts=class_pixel_counts(existing))
                return result
        lut = (synthia_id_to_train_id_lut()
               if reader == 'synthia' else label_id_to_train_id_lut())
        ids = LABEL_READERS[reader](label_path)
        train_ids = lut[ids]
        if train_ids.shape != image_hw:
            train_ids = cv2.resize(
                train_ids, (image_hw[1], image_hw[0]),
                interpolation=cv2.INTER_NEAREST)
        write_png_atomic(out_path, train_ids)
        result.update(status='converted', counts=class_pixel_counts(train_ids))
    except LabelEncodingError as e:
        result['error'] = str(e)
    except (OSError, ValueError, cv2.error) as e:
        result['error'] = f'{label_rel} / {image_rel}: {type(e).__name__}: {e}'
    return result


def _read_existing(path: str, image_hw: Tuple[int, int]):
    """An existing trainId label, or None if it must be rewritten (not
    decodable or not the image's size: an output of an older, different
    run)."""
    try:
        train_ids = read_train_id_png(path)
    except (OSError, ValueError):
        return None
    return train_ids if train_ids.shape == image_hw else None


# --------------------------------------------------------------------------
# Whole-dataset conversion
# --------------------------------------------------------------------------
@dataclass
class ConversionReport:
    """What one converter run did."""
    converted: int = 0
    existing: int = 0
    mismatches: List[dict] = field(default_factory=list)
    images_without_label: List[str] = field(default_factory=list)
    labels_without_image: List[str] = field(default_factory=list)
    errors: List[str] = field(default_factory=list)
    stats_written: bool = False

    def summary(self) -> str:
        skipped = sum(m['action'] == 'skipped' for m in self.mismatches)
        resized = len(self.mismatches) - skipped
        unpaired = len(self.images_without_label) + len(
            self.labels_without_image)
        return (f'converted {self.converted}, skipped-existing '
                f'{self.existing}, size-mismatched {len(self.mismatches)} '
                f'(skipped {skipped}, resized {resized}), unpaired '
                f'{unpaired}, errors {len(self.errors)}')


def build_class_stats(records: Sequence[dict]) -> Tuple[list, dict]:
    """DAFormer-format statistics from ``convert_pair`` results.

    Returns:
        ``(sample_class_stats, samples_with_class)``: a list of
        ``{"file": path, "<trainId>": n, ...}`` sorted by file, and
        ``{"<trainId>": [[file, n], ...]}`` with keys in trainId order.
    """
    sample_class_stats = []
    samples_with_class: Dict[int, list] = {}
    for rec in sorted(records, key=lambda r: r['file']):
        entry = {'file': rec['file']}
        for c, n in sorted(rec['counts'].items()):
            entry[str(c)] = n
            samples_with_class.setdefault(c, []).append([rec['file'], n])
        sample_class_stats.append(entry)
    return sample_class_stats, {
        str(c): samples_with_class[c]
        for c in sorted(samples_with_class)
    }


def convert_dataset(data_root: str,
                    dataset: str,
                    nproc: int = 1,
                    size_mismatch: str = 'skip',
                    log: Optional[Callable[[str], None]] = print,
                    progress: bool = True) -> ConversionReport:
    """Convert the labels of one dataset to trainIds (see module doc).

    Args:
        data_root: dataset root (``data/gta``, ``data/synthia``,
            ``data/cityscapes``).
        dataset: ``'gta'``, ``'synthia'`` or ``'cityscapes'``.
        nproc: worker processes.
        size_mismatch: ``'skip'`` or ``'resize'`` (module doc).
        log: where messages go (``None``: silent).
        progress: show a progress bar.

    Returns:
        The run's :class:`ConversionReport`.

    Raises:
        FileNotFoundError: missing data root or folders, no images.
        ConversionError: after the run, if any file failed; the message
            lists them and the statistics files are left untouched.
    """
    if dataset not in DATASET_LAYOUTS:
        raise ValueError(f'unknown dataset "{dataset}", expected one of '
                         f'{sorted(DATASET_LAYOUTS)}')
    if size_mismatch not in SIZE_MISMATCH_RULES:
        raise ValueError(f'size_mismatch must be one of {SIZE_MISMATCH_RULES},'
                         f' got "{size_mismatch}"')
    log = log or (lambda msg: None)
    if not osp.isdir(data_root):
        raise FileNotFoundError(
            f'DATA_ROOT "{data_root}" does not exist or is not a folder.')
    report = ConversionReport()
    tasks, stats_files = [], set()
    for layout in DATASET_LAYOUTS[dataset]:
        listing = find_pairs(data_root, layout, dataset)
        for rel in listing.stale_temp_files:
            os.remove(osp.join(data_root, rel))
        if listing.stale_temp_files:
            log(f'removed {len(listing.stale_temp_files)} temporary file(s) '
                f'left by an interrupted run in {layout.label_dir}/')
        report.images_without_label += listing.images_without_label
        report.labels_without_image += listing.labels_without_image
        for image_rel, label_rel, out_rel in listing.pairs:
            tasks.append((data_root, layout.label_reader, image_rel,
                          label_rel, out_rel, size_mismatch))
            if layout.with_stats:
                stats_files.add(out_rel)
    if not tasks:
        folders = ', '.join(
            osp.join(data_root, layout.image_dir)
            for layout in DATASET_LAYOUTS[dataset])
        raise FileNotFoundError(
            f'no image/label pairs found in {folders} (images without '
            f'label: {len(report.images_without_label)}, labels without '
            f'image: {len(report.labels_without_image)}).')
    for rel in report.images_without_label:
        log(f'image without label: {rel}')
    for rel in report.labels_without_image:
        log(f'label without image: {rel}')

    results = _run_tasks(tasks, nproc, progress)
    for res in results:
        if res['mismatch'] is not None:
            mm = res['mismatch']
            report.mismatches.append(mm)
            log(f'size mismatch: {mm["label"]} is {mm["label_size"]} (HxW), '
                f'{mm["image"]} is {mm["image_size"]}: {mm["action"]}')
        if res['status'] == 'converted':
            report.converted += 1
        elif res['status'] == 'existing':
            report.existing += 1
        elif res['status'] == 'error':
            report.errors.append(res['error'])

    mismatch_path = osp.join(data_root, SIZE_MISMATCH_FILE)
    if report.mismatches:
        write_json_if_changed(
            mismatch_path, dict(rule=size_mismatch, pairs=report.mismatches))
    elif osp.isfile(mismatch_path):
        os.remove(mismatch_path)

    if report.errors:
        for msg in report.errors:
            log(f'error: {msg}')
        log(report.summary())
        shown = '\n  '.join(report.errors[:10])
        more = (f'\n  ... and {len(report.errors) - 10} more'
                if len(report.errors) > 10 else '')
        raise ConversionError(
            f'{len(report.errors)} label file(s) could not be converted; '
            f'statistics were not written:\n  {shown}{more}')

    stats_records = [
        r for r in results
        if r['status'] in ('converted', 'existing')
        and r['file'] in stats_files
    ]
    if stats_records:
        sample_class_stats, samples_with_class = build_class_stats(
            stats_records)
        write_json_if_changed(
            osp.join(data_root, STATS_FILE), sample_class_stats)
        write_json_if_changed(
            osp.join(data_root, SAMPLES_WITH_CLASS_FILE), samples_with_class)
        report.stats_written = True
    log(report.summary())
    return report


def _run_tasks(tasks: list, nproc: int, progress: bool) -> List[dict]:
    if nproc > 1:
        from mmengine.utils import track_parallel_progress
        if progress:
            return track_parallel_progress(
                convert_pair, tasks, nproc, chunksize=8)
        from multiprocessing import Pool
        with Pool(nproc) as pool:
            return pool.map(convert_pair, tasks, chunksize=8)
    if progress:
        from mmengine.utils import track_progress
        return track_progress(convert_pair, tasks)
    return [convert_pair(t) for t in tasks]


def converter_main(dataset: str, description: str,
                   argv: Optional[Sequence[str]] = None) -> int:
    """Command line shared by ``tools/dataset_converters/*.py``."""
    import argparse
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument('data_root', help='dataset root folder (DATA_ROOT)')
    parser.add_argument(
        '--nproc', type=int, default=1, help='number of worker processes')
    parser.add_argument(
        '--size-mismatch',
        choices=SIZE_MISMATCH_RULES,
        default='skip',
        help='what to do with a label whose size differs from its image: '
        'skip the pair and list it in DATA_ROOT/size_mismatch.json '
        '(default), or nearest-resize the label to the image size')
    parser.add_argument(
        '--no-progress', action='store_true', help='hide the progress bar')
    args = parser.parse_args(argv)
    try:
        convert_dataset(
            args.data_root,
            dataset,
            nproc=args.nproc,
            size_mismatch=args.size_mismatch,
            progress=not args.no_progress)
    except (FileNotFoundError, ConversionError) as e:
        print(f'error: {e}')
        return 1
    return 0


__all__ = [
    'IGNORE_INDEX', 'NUM_CLASSES', 'TRAIN_ID_SUFFIX', 'STATS_FILE',
    'SAMPLES_WITH_CLASS_FILE', 'SIZE_MISMATCH_FILE', 'LabelEncodingError',
    'ConversionError', 'ConversionReport', 'label_id_to_train_id_lut',
    'synthia_id_to_train_id_lut', 'read_label_id_png', 'read_synthia_label',
    'read_train_id_png', 'class_pixel_counts', 'atomic_write_bytes',
    'write_png_atomic', 'write_json_if_changed', 'find_pairs', 'convert_pair',
    'convert_dataset', 'build_class_stats', 'converter_command',
    'converter_main', 'DATASET_LAYOUTS'
]
