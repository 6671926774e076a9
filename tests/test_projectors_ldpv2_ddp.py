"""LDPv2's PEG under DDP: the depthwise conv's weight grad came out with another stride on its size-1 dimension than
the weight's, and every rank printed PyTorch's "Grad strides do not match bucket view strides" warning."""

from __future__ import annotations

import os
import pickle
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from model.projectors import LDPv2Projector

ROOT = Path(__file__).resolve().parents[1]
WARNING = "Grad strides do not match bucket view strides"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_peg_weight_takes_its_grads_layout_and_outputs_are_unchanged():
    torch.manual_seed(0)
    projector = LDPv2Projector(8, 16)
    weight = projector.peg.peg[0].weight
    x = torch.randn(2, 25, 8)
    out = projector(x)
    out.sum().backward()
    assert weight.grad.stride() == weight.stride() == (9, 1, 3, 1)
    old = pickle.loads(pickle.dumps(projector))  # the module still pickles (the load hook is no lambda)
    old.peg.peg[0].weight.data = weight.data.as_strided(weight.shape, (9, 9, 3, 1))  # the layout it had before
    assert torch.equal(old(x), out)
    state = {key: value.clone() for key, value in old.state_dict().items()}  # contiguous, as a checkpoint reads
    for assign in (True, False):
        loaded = LDPv2Projector(8, 16)
        loaded.load_state_dict(state, assign=assign)
        assert loaded.peg.peg[0].weight.stride() == (9, 1, 3, 1), assign
        assert torch.equal(loaded.to(torch.float64).float()(x), out), assign


_RANK = textwrap.dedent("""
    import os, sys
    import torch, torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel
    from model.projectors import LDPv2Projector

    def run(rank, port):
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        dist.init_process_group("gloo", rank=rank, world_size=2)
        torch.manual_seed(0)
        projector = LDPv2Projector(8, 16)
        projector.load_state_dict({k: v.clone() for k, v in projector.state_dict().items()}, assign=True)
        ddp = DistributedDataParallel(projector)
        for _ in range(2):
            ddp(torch.randn(2, 16, 8)).sum().backward()
        dist.destroy_process_group()

    if __name__ == "__main__":
        torch.multiprocessing.spawn(run, args=(int(sys.argv[1]),), nprocs=2)
""")


@pytest.mark.slow
def test_ldpv2_under_two_process_gloo_ddp_prints_no_grad_stride_warning(tmp_path):
    script = tmp_path / "ddp_ldpv2.py"
    script.write_text(_RANK)
    done = subprocess.run([sys.executable, str(script), str(_free_port())], cwd=ROOT, capture_output=True, text=True,
                          timeout=240, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-2000:]
    assert WARNING not in done.stderr + done.stdout
