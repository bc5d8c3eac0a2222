"""``--memory-limit`` against memory actually used: the chunk size the report picks keeps the frame
mapping's peak memory growth under the limit, measured in a fresh process (Linux ``VmHWM``)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="reads the peak resident size from /proc/self/status")

MIB = 2**20

# Run in a fresh process, so that the peak resident size is this computation's alone. The
# baseline is taken after one full frame mapping with the smallest chunk, so the model, its
# autograd buffers and the allocator's caches are already counted. The peak is the kernel's
# high-water mark of this address space (``VmHWM``): unlike ``ru_maxrss``, which survives
# ``exec`` and so starts at the size of a large parent (pytest after hundreds of tests), it sees
# only this process.
SCRIPT = """
import json, sys
import torch
from attnprobe.models import ConformerAED, ConformerAEDConfig
from attnprobe.probes import frame_mapping
from attnprobe.reporting.utterance import (EncoderShape, ReportOptions, fitting_chunk_size,
                                          frame_mapping_bytes)

limit, chunk_override = int(sys.argv[1]), sys.argv[2]
torch.manual_seed(0)
torch.set_num_threads(1)
model = ConformerAED(ConformerAEDConfig.tiny(vocab_size=32, blocks=3, d_model=128, heads=4,
                                             ff_dim=256)).eval()
features = torch.randn(1, 1800, 80)
lengths = torch.tensor([1800])
shape = EncoderShape(frames=300, width=128, blocks=3, heads=4)
options = ReportOptions(projections=2, chunk_size=512, max_frames=48, memory_limit_bytes=limit)
chunk = fitting_chunk_size(shape, options) if chunk_override == "fit" \\
    else int(chunk_override)

def status_bytes(field):
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith(field + ":"))
    return int(line.split()[1]) * 1024

frame_mapping(model, (features, lengths), projections=2, chunk_size=1, max_frames=48, layers=[2])
peak = lambda: status_bytes("VmHWM")
before = peak()
frame_mapping(model, (features, lengths), projections=2, chunk_size=chunk, max_frames=48,
              layers=[2])
print(json.dumps({"chunk": chunk, "growth": peak() - before,
                  "estimate": frame_mapping_bytes(shape, ReportOptions(
                      projections=2, chunk_size=chunk, max_frames=48))}))
"""


def measure(limit: int, chunk: str) -> dict:
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(limit), chunk], check=True,
                            capture_output=True, text=True, timeout=300,
                            env={"OMP_NUM_THREADS": "1", "PATH": ""} | _python_env())
    return json.loads(result.stdout.strip().splitlines()[-1])


def _python_env() -> dict[str, str]:
    import os

    return {key: value for key, value in os.environ.items()
            if key.startswith(("PYTHON", "HOME", "LD_", "VIRTUAL_ENV"))}


@pytest.mark.parametrize("limit_mib", [64, 256])
def test_the_chosen_chunk_keeps_measured_peak_memory_under_the_limit(limit_mib: int) -> None:
    fitted = measure(limit_mib * MIB, "fit")
    assert fitted["chunk"] >= 1
    assert fitted["growth"] <= limit_mib * MIB, fitted
    # The estimate the chunk was chosen by is an upper bound of what the frame mapping used.
    assert fitted["growth"] <= fitted["estimate"], fitted


def test_without_the_limit_the_frame_mapping_would_pass_it() -> None:
    """The measurement can see a limit broken: the largest chunk grows past 64 MiB."""
    unlimited = measure(64 * MIB, "512")
    assert unlimited["growth"] > 64 * MIB, unlimited
