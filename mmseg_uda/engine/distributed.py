"""Process-group teardown for tools/train.py and tools/test.py."""
import torch.distributed as dist


def shutdown_distributed() -> None:
    """Wait for every rank, then destroy the default process group.

    Called only after a successful run (on an exception a rank may be stuck
    in a collective, and a barrier would hang). Without it, a gloo worker
    thread can outlive the interpreter's teardown and abort the process
    with 'terminate called without an active exception' (3 of 10
    two-process CPU test runs before this existed; pytorch/pytorch#190489).
    """
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
