"""Run a function in N CPU processes over gloo (torch.multiprocessing)."""
import os
import socket

import torch.distributed as dist
import torch.multiprocessing as mp


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _entry(rank, world_size, port, fn, args):
    os.environ.update(
        MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port), RANK=str(rank),
        WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))
    dist.init_process_group('gloo', rank=rank, world_size=world_size)
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
    mp.spawn(_entry, args=(world_size, free_port(), fn, args),
             nprocs=world_size, join=True)
