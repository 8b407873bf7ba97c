"""`codeblock` CLI with accelerate's FSDP on CPU processes (gloo), for tests on machines without a GPU.

accelerate applies an FSDP plugin only to GPU-type process groups: on CPU it starts plain
multi-process (DDP) training and ignores the plugin (configs/accelerate/README.md). torch's FSDP2
(`fully_shard`) itself runs on CPU over gloo, so this entry point tells accelerate that the
torchrun-started processes form a GPU-type group whose device is the CPU; everything after that
(wrapping, sharded checkpoints, resume, the final gather) is accelerate's and the Trainer's own
FSDP2 code path. Only tests use it:

    accelerate launch --config_file <FSDP config with use_cpu: true> tests/fsdp_cpu_main.py train ...
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("ACCELERATE_TORCH_DEVICE", "cpu")  # PartialState.set_device keeps a preset device

from accelerate.state import PartialState  # noqa: E402
from accelerate.utils import DistributedType  # noqa: E402

_prepare_backend = PartialState._prepare_backend


def _gloo_as_gpu_group(self, cpu=False, sagemaker_dp=False, backend=None):
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        import torch.distributed as dist

        if not dist.is_initialized():  # accelerate initialises GPU-type groups only when not told cpu
            dist.init_process_group("gloo")
        return "gloo", DistributedType.MULTI_GPU
    return _prepare_backend(self, cpu, sagemaker_dp, backend)


PartialState._prepare_backend = _gloo_as_gpu_group

if __name__ == "__main__":
    from codeblock.cli import main

    sys.exit(main(sys.argv[1:]))
