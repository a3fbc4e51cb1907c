"""The package's global-batch numbering
(``mmseg_uda/models/utils/global_batch.py``) is the sampler's: on 2 gloo
processes, global index g = i·W + r of local sample i on rank r is the
position of that sample in the batch ``UDAPairSampler`` hands one process
(world_size 1) with the global batch size; gathering puts rows there; and
unequal local batch sizes are refused with a clear error, by the helpers
and by T2S."""
import os

import pytest
import torch
from mmengine.dist import get_rank

from dist_utils import (random_items, run_distributed, sample_names,
                        sampler_batches, uda_dataset)
from mmseg_uda.models.utils.global_batch import (gather_global,
                                                 global_batch_size,
                                                 global_indices,
                                                 interleave_ranks, local_part,
                                                 rank_and_local_index)

DATA = uda_dataset(random_items(8, 16, 16, 4, True, seed=0),
                   random_items(5, 16, 16, 4, False, seed=1))


def test_one_process_numbering_is_the_identity():
    x = torch.arange(6.).view(3, 2)
    assert global_indices(3).tolist() == [0, 1, 2]
    assert global_batch_size(3) == 3
    assert torch.equal(gather_global(x), x)
    assert torch.equal(local_part(x), x)


def test_interleave_and_index_inverse():
    parts = [torch.tensor([[0], [2], [4]]), torch.tensor([[1], [3], [5]])]
    assert interleave_ranks(parts).flatten().tolist() == list(range(6))
    with pytest.raises(ValueError, match=r'\[3, 2\]'):
        interleave_ranks([parts[0], parts[1][:2]])


def _worker(rank, world_size, out):
    result = {}
    # the sampler's split and the numbering agree
    local = sampler_batches(DATA, batch_size=3, iterations=2)
    result['names'] = [sample_names(b) for b in local]
    result['indices'] = global_indices(3).tolist()
    rank_of, local_of = rank_and_local_index(torch.arange(6), 3)
    result['rank_and_local'] = (rank_of.tolist(), local_of.tolist())
    rows = torch.tensor([[10 * rank + i] for i in range(3)])
    gathered = gather_global(rows)
    result['gathered'] = gathered.flatten().tolist()
    result['local_part'] = local_part(gathered).flatten().tolist()
    # unequal local batch sizes: a clear error on every rank
    for name, call in (('indices', lambda: global_indices(2 + rank)),
                       ('gather', lambda: gather_global(rows[:2 + rank])),
                       ('t2s', lambda: _t2s_step(2 + rank))):
        try:
            call()
            result[f'unequal_{name}'] = None
        except ValueError as error:
            result[f'unequal_{name}'] = str(error)
    torch.save(result, os.path.join(out, f'{get_rank()}.pth'))


def _t2s_step(batch_size):
    from t2s_utils import build, optim, set_iter, t2s_cfg
    from uda_utils import random_uda_batch
    model = build([t2s_cfg()])
    set_iter(0)
    model.train_step(random_uda_batch(batch_size=batch_size), optim(model))


def test_two_process_numbering_is_the_samplers(tmp_path):
    run_distributed(_worker, 2, str(tmp_path))
    ranks = [torch.load(tmp_path / f'{r}.pth') for r in range(2)]
    single = [sample_names(b) for b in
              sampler_batches(DATA, batch_size=6, iterations=2)]
    for rank, got in enumerate(ranks):
        assert got['indices'] == [rank, rank + 2, rank + 4]
        for it, names in enumerate(got['names']):
            # local sample i is global sample i·W + r of the 1-process batch
            assert names == [single[it][g] for g in got['indices']]
        assert got['rank_and_local'] == ([0, 1, 0, 1, 0, 1],
                                         [0, 0, 1, 1, 2, 2])
        # row i of rank r lands at i·W + r
        assert got['gathered'] == [0, 10, 1, 11, 2, 12]
        assert got['local_part'] == [10 * rank + i for i in range(3)]
        for name in ('indices', 'gather', 't2s'):
            message = got[f'unequal_{name}']
            assert message is not None, name
            assert '[2, 3]' in message and 'global_batch.py' in message
