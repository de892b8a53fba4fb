"""What every benchmark records about the machine it ran on (imported by the scripts beside it)."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict:
    """Platform, CPU, torch build and threads, the GPU if any, and the load when the benchmark started
    (other work on the machine inflates absolute times; ratios measured in one run are what to quote)."""
    import torch

    from medseg.devices import bf16_supported

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "platform": platform.platform(), "python": platform.python_version(), "cpu": cpu_model(),
        "cpu_count": os.cpu_count(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_native_bf16": bf16_supported(torch.device("cpu")),
        "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
        "device": gpu or "cpu", "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }
