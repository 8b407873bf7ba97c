"""This process's place among the processes of a multi-process stage (torchrun / accelerate launch).

`Ranks.from_env` reads `RANK`, `WORLD_SIZE` and `LOCAL_RANK` (set by the launcher; one process
without them) and, with several processes, joins a torch.distributed group for barriers and for
gathering small Python objects. `rank_device` moves a model to the rank's own GPU. Shared by the
stages that split their work over ranks: score (shards) and evaluate (generation batches).
"""

from __future__ import annotations

import dataclasses
import os
from datetime import timedelta


@dataclasses.dataclass
class Ranks:
    """This process's rank, the number of processes, and its GPU index on this machine."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    _own_group: bool = False

    @classmethod
    def from_env(cls, use_cuda: bool, timeout_s: float | None = None) -> Ranks:
        """`use_cuda`: NCCL on this rank's GPU, else gloo on CPU (enough for barriers and small
        objects). `timeout_s`: how long a barrier waits for the slowest rank (torch's default if None)."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        r = cls(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))
        if world > 1:
            import torch.distributed as dist

            if not dist.is_initialized():
                if use_cuda:
                    import torch

                    torch.cuda.set_device(r.local_rank)
                kw = {"timeout": timedelta(seconds=timeout_s)} if timeout_s else {}
                dist.init_process_group(backend="nccl" if use_cuda else "gloo", **kw)
                r._own_group = True
        return r

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def gather(self, obj) -> list:
        """`obj` of every rank, in rank order (on every rank)."""
        if self.world == 1:
            return [obj]
        import torch.distributed as dist

        out: list = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def close(self) -> None:
        if self._own_group:
            import torch.distributed as dist

            dist.destroy_process_group()
            self._own_group = False


def rank_device(cfg, use_cuda: bool, ranks: Ranks):
    """One GPU per rank: with several ranks, model.device auto/cuda becomes cuda:LOCAL_RANK."""
    if ranks.world > 1 and use_cuda and cfg.model.device in ("auto", "cuda"):
        return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, device=f"cuda:{ranks.local_rank}"))
    return cfg
