"""The per-iteration context a UDA method receives from ``UDASegmentor``."""
from typing import Dict, List, Optional

import torch
from torch import Tensor

from ..utils.normalization import denormalize, renormalize, to_rgb_uint8
from ..utils.seg_forward import (SegOutputs, segmentor_forward,
                                 segmentor_teacher_forward)

DOMAINS = ('source', 'target')


class UDAContext:
    """Everything a method may use in one training iteration.

    Student outputs per domain are computed once (lazily, or all at once by
    the segmentor when BatchNorm is shared across domains) and cached, so two
    methods never forward the same batch twice. Teacher outputs are computed
    under ``torch.no_grad`` and cached the same way. Extra images (mixed,
    stylised) go through :meth:`forward_student` / :meth:`forward_teacher`.

    Target labels are never available here: the target pipeline does not
    load them (``UDADataset`` refuses a target pipeline that does).
    """

    def __init__(self, segmentor, inputs: Dict[str, Tensor],
                 data_samples: Dict[str, list], iteration: int,
                 debug: bool = False):
        self.segmentor = segmentor
        self.inputs = inputs
        self.data_samples = data_samples
        self.iter = iteration
        self.debug = debug
        # name -> (B, 3, H, W) uint8 image or (B, H, W) label map; filled
        # only when ``debug`` is set (the debug-picture hook asks for it).
        self.debug_maps: Dict[str, Tensor] = {}
        self._student: Dict[str, SegOutputs] = {}
        self._teacher: Dict[str, SegOutputs] = {}
        self._src_label: Optional[Tensor] = None

    # ------------------------------------------------------------------ data
    @property
    def student(self):
        """The student segmentor (an mmseg ``EncoderDecoder``)."""
        return self.segmentor.student

    @property
    def teacher(self):
        """The EMA teacher, or None if no method asked for one."""
        return self.segmentor.teacher

    @property
    def preprocessor(self):
        return self.segmentor.data_preprocessor

    @property
    def num_classes(self) -> int:
        return self.student.decode_head.num_classes

    @property
    def ignore_index(self) -> int:
        return self.student.decode_head.ignore_index

    def img(self, domain: str) -> Tensor:
        return self.inputs[domain]

    def img_metas(self, domain: str) -> List[dict]:
        return [s.metainfo for s in self.data_samples[domain]]

    @property
    def src_label(self) -> Tensor:
        """Source labels (B, H, W), int64, ``ignore_index`` where void."""
        if self._src_label is None:
            self._src_label = torch.stack([
                s.gt_sem_seg.data.squeeze(0)
                for s in self.data_samples['source']
            ]).long()
        return self._src_label

    def denormalize(self, img: Tensor) -> Tensor:
        return denormalize(img, self.preprocessor)

    def renormalize(self, img: Tensor) -> Tensor:
        return renormalize(img, self.preprocessor)

    # --------------------------------------------------------------- student
    def student_outputs(self, domain: str) -> SegOutputs:
        """Student backbone features, pre-classifier feature and logits for
        the source or target batch (with gradients)."""
        if domain not in self._student:
            self.segmentor._forward_student_domains(self, [domain])
        return self._student[domain]

    def forward_student(self, img: Tensor,
                        with_feat: bool = True) -> SegOutputs:
        """Student forward on an extra batch (not cached)."""
        return segmentor_forward(self.student, img, with_feat)

    # --------------------------------------------------------------- teacher
    def teacher_outputs(self, domain: str) -> SegOutputs:
        """Teacher outputs for the un-augmented source/target batch (no
        gradient), computed once per iteration."""
        if domain not in self._teacher:
            self._teacher[domain] = self.forward_teacher(self.inputs[domain])
        return self._teacher[domain]

    @torch.no_grad()
    def forward_teacher(self, img: Tensor,
                        with_feat: bool = True) -> SegOutputs:
        if self.teacher is None:
            raise RuntimeError(
                'A method asked for teacher outputs but UDASegmentor built no '
                'teacher: set `requires_teacher = True` on the method.')
        with self.segmentor.teacher_forward_mode():
            return segmentor_teacher_forward(self.teacher, img, with_feat)

    # ----------------------------------------------------------------- debug
    def add_debug_image(self, name: str, img: Tensor) -> None:
        """Record a normalised network input for the debug picture."""
        if self.debug:
            self.debug_maps[name] = to_rgb_uint8(img, self.preprocessor)

    def add_debug_map(self, name: str, label_map: Tensor) -> None:
        """Record a (B, H, W) integer map (labels, groups) for the debug
        picture; colours come from the dataset palette or a fixed one."""
        if self.debug:
            self.debug_maps[name] = label_map.detach().long()
