"""Run a function in N CPU processes over gloo (torch.multiprocessing)."""
import os
import shutil
import tempfile

import torch.distributed as dist
import torch.multiprocessing as mp


def file_init_method(directory) -> str:
    """A rendezvous through a file in ``directory``: unlike probing for a
    free TCP port, nothing can take it between the probe and the bind."""
    return 'file://' + os.path.join(directory, 'rendezvous')


def _entry(rank, world_size, init_method, fn, args):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size),
                      LOCAL_RANK=str(rank))
    dist.init_process_group('gloo', init_method=init_method, rank=rank,
                            world_size=world_size)
    try:
        import torch
        from mmengine.registry import init_default_scope

        import mmseg_uda  # noqa: F401
        init_default_scope('mmseg')
        torch.set_num_threads(1)
        fn(rank, world_size, *args)
    finally:
        dist.destroy_process_group()


def run_distributed(fn, world_size, *args):
    """Call ``fn(rank, world_size, *args)`` in ``world_size`` processes with
    an initialised gloo process group; raises if any process fails."""
    directory = tempfile.mkdtemp(prefix='mmseg_uda_gloo_')
    try:
        mp.spawn(_entry,
                 args=(world_size, file_init_method(directory), fn, args),
                 nprocs=world_size, join=True)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
