"""Sampler pairing source and target samples for :class:`UDADataset`."""
import itertools
from typing import Iterator, Optional, Sized, Tuple

import numpy as np
import torch
from mmengine.dist import get_dist_info, sync_random_seed
from torch.utils.data import Sampler

from mmseg_uda.registry import DATA_SAMPLERS

_SEED_CHUNK = 1024


def domain_sizes(dataset: Sized) -> Tuple[int, int]:
    """(number of source samples, number of target samples) of a paired
    dataset (anything with ``num_source``/``num_target``)."""
    try:
        return int(dataset.num_source), int(dataset.num_target)
    except AttributeError:
        raise TypeError(
            f'UDAPairSampler needs a paired dataset with num_source and '
            f'num_target (UDADataset), got {type(dataset).__name__}') from None


@DATA_SAMPLERS.register_module()
class UDAPairSampler(Sampler):
    """Infinite sampler of ``(source_index, target_index, sample_seed)``.

    Source and target indices come from two independent streams, each a
    fresh seeded permutation of its domain whenever the previous one is
    exhausted (so the two domains are shuffled independently, as DAFormer's
    ``UDADataset`` pairing of two shuffled loaders, without enumerating the
    |S|·|T| product the way ``InfiniteSampler`` over a product-sized
    dataset would). ``sample_seed`` is a 32-bit seed per sample with which
    :class:`UDADataset` seeds all randomness of that sample, so a sample
    does not depend on ``num_workers`` and is reproduced after a resume.

    Like mmengine's ``InfiniteSampler``: the global stream is sliced by
    rank (rank r takes elements r, r + world_size, ...), and the seed is
    synchronised across ranks with ``mmengine.dist.sync_random_seed`` when
    not given.

    A dataset without target (``num_target == 0``, source-only
    ``UDADataset``) gets ``None`` for the target index.

    Args:
        dataset: a :class:`UDADataset` (needs ``num_source``/``num_target``).
        shuffle: shuffle both domains; otherwise cycle through them in
            order. Sample seeds are random in both cases.
        seed: random seed; None synchronises a random one across ranks.
    """

    def __init__(self,
                 dataset: Sized,
                 shuffle: bool = True,
                 seed: Optional[int] = None) -> None:
        self.rank, self.world_size = get_dist_info()
        self.dataset = dataset
        self.shuffle = shuffle
        self.seed = sync_random_seed() if seed is None else int(seed)
        self.num_source, self.num_target = domain_sizes(dataset)
        if self.num_source == 0:
            raise ValueError('UDAPairSampler: the source dataset is empty')
        self.indices = self._indices_of_rank()

    def _index_stream(self, size: int,
                      seed: int) -> Iterator[Optional[int]]:
        if size == 0:  # no target domain
            yield from itertools.repeat(None)
        generator = torch.Generator()
        generator.manual_seed(seed)
        while True:
            if self.shuffle:
                yield from torch.randperm(size, generator=generator).tolist()
            else:
                yield from range(size)

    def _seed_stream(self, seed: int) -> Iterator[int]:
        rng = np.random.Generator(np.random.PCG64(seed))
        while True:
            yield from rng.integers(
                0, 2**32, size=_SEED_CHUNK, dtype=np.uint64).tolist()

    def _infinite_triples(self) -> Iterator[Tuple[int, Optional[int], int]]:
        # Three independent streams derived from one (non-negative) seed.
        source_seed, target_seed, sample_seed = np.random.SeedSequence(
            self.seed % 2**63).generate_state(3).tolist()
        return zip(
            self._index_stream(self.num_source, source_seed),
            self._index_stream(self.num_target, target_seed),
            self._seed_stream(sample_seed))

    def _indices_of_rank(self) -> Iterator[Tuple[int, Optional[int], int]]:
        yield from itertools.islice(self._infinite_triples(), self.rank, None,
                                    self.world_size)

    def __iter__(self) -> Iterator[Tuple[int, Optional[int], int]]:
        yield from self.indices

    def __len__(self) -> int:
        """The larger domain's size (one 'epoch' for logging only; the
        stream is infinite)."""
        return max(self.num_source, self.num_target)

    def set_epoch(self, epoch: int) -> None:
        """Not used: the sampler is infinite (iteration-based training)."""
