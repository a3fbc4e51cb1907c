"""Install mmseg-uda. Neither torch nor mmcv is installed or replaced by this
file: install torch first (CPU: `pip install torch==2.13.0`; GPU: keep your
CUDA build, torch>=2.5.1), then `pip install -r requirements.txt` (mmcv-lite,
for CPU and GPU alike) or requirements/cluster.txt (full mmcv, optional), then
`pip install --no-build-isolation --no-deps -e .`; see the README."""
import os.path as osp

from setuptools import find_packages, setup


def read_version():
    scope = {}
    with open(osp.join('mmseg_uda', 'version.py')) as f:
        exec(f.read(), scope)
    return scope['__version__']


setup(
    name='mmseg_uda',
    version=read_version(),
    description='Unsupervised domain adaptive semantic segmentation '
    '(CDGA, PLCA, T2S-DA) for MMSegmentation 1.x',
    long_description=open('README.md').read(),
    long_description_content_type='text/markdown',
    packages=find_packages(include=['mmseg_uda', 'mmseg_uda.*']),
    # StyleAugmentor's embedding statistics (upstream file, MIT)
    package_data={'mmseg_uda': ['models/utils/style_augmentor_data/*']},
    python_requires='>=3.9',
    install_requires=[
        'mmengine>=0.10.0,<0.11',
        'mmsegmentation==1.2.2',
        'numpy>=1.22,<2.4',
        'setuptools<82',
        'opencv-python',
        'ftfy',
        'regex',
        'cityscapesscripts>=2.2',
        'kornia>=0.7',
    ],
    extras_require=dict(
        tests=['pytest'], demo=['scikit-image']),
    zip_safe=False,
)
