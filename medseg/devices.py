"""The device to run on and what it does natively, shared by training and inference: bf16, subnormal flushing."""

from __future__ import annotations

import contextlib
import threading

_flush_state = threading.local()


def resolve_device(name: str | None = "auto", local_rank: int = 0):
    """``torch.device`` for ``name``: ``auto`` = CUDA (``cuda:local_rank``), then MPS, then CPU; ``cpu``,
    ``cuda``, ``cuda:N`` or ``mps`` as given. A device the machine lacks, or an unknown name, is a
    ``ConfigError`` naming the choices (exit code 1). Training, prediction and their CLIs share it.
    """
    import torch

    from medseg.errors import ConfigError

    name = (name or "auto").lower()
    cuda = torch.cuda.is_available()
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if name == "auto":
        if cuda:
            return torch.device("cuda", local_rank % max(torch.cuda.device_count(), 1))
        return torch.device("mps") if mps else torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        if not cuda:
            raise ConfigError(f"--device {name}: CUDA is not available on this machine (use --device cpu)")
        count = torch.cuda.device_count()
        index = name.split(":", 1)[1] if ":" in name else str(local_rank % count)
        if not index.isdigit() or int(index) >= count:
            raise ConfigError(f"--device {name}: this machine has CUDA devices 0 to {count - 1}")
        return torch.device("cuda", int(index))
    if name == "mps":
        if not mps:
            raise ConfigError("--device mps: MPS is not available on this machine (use --device cpu)")
        return torch.device("mps")
    if name == "cpu":
        return torch.device("cpu")
    raise ConfigError(f"--device {name}: expected auto, cpu, cuda, cuda:N or mps")


def bf16_supported(device) -> bool:
    """bf16 runs natively: a CUDA device that supports it, or a CPU with AVX512-BF16 or AMX instructions
    (elsewhere CPU bf16 is emulated and slower than fp32)."""
    import torch

    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        return any(getattr(torch.cpu, name, lambda: False)() for name in probes)
    return False


@contextlib.contextmanager
def subnormals_flushed():
    """Inside the block this thread treats fp32 subnormal numbers (below 1.2e-38) as zero (x86 FTZ/DAZ,
    ``torch.set_flush_denormal``); after it, IEEE arithmetic again. Training steps and sliding-window
    prediction run in it.

    Trained weights collect subnormals: after 483 epochs 45 % of the Hippocampus ``unet3d``'s weights and 41 %
    of their moving average were below 1.2e-38 (none after 170 epochs; 35 of 64 batch-norm scales of one
    decoder stage among them), probably weights that no longer get a data gradient, shrunk by Adam's L2
    weight decay. x86 CPUs take a slow microcode path for every such operand; activations can be
    subnormal too. Measured on the AMX Xeon (2 threads, torch 2.13, one 40×56×40 forward pass in fp32
    with the epoch-486 weights): 0.93 s, 0.125 s with flushing (as fast as freshly initialised weights),
    equal outputs; ``benchmarks/cpu_inference.py`` for whole predictions. The flag is not left on outside:
    scipy's ``cKDTree`` (surface distances) crashed with a segmentation fault on some inputs under it.
    Nested blocks keep it until the outermost ends. Yields False on a CPU without the setting (not x86).
    """
    import torch

    depth = getattr(_flush_state, "depth", 0)
    on = bool(torch.set_flush_denormal(True))
    _flush_state.depth = depth + 1
    try:
        yield on
    finally:
        _flush_state.depth = depth
        if on and depth == 0:
            torch.set_flush_denormal(False)


def start_flushing_pool() -> bool:
    """Start torch's intra-op thread pool inside :func:`subnormals_flushed`, so that its threads, which
    inherit the flag when they are created and only ever run torch kernels, flush for good; the calling
    thread flushes only inside ``subnormals_flushed`` blocks. Training and the predictor call this before
    any other torch work; a pool that already runs is left as it is. Returns False where there is no
    flag to set (not x86).
    """
    import torch

    with subnormals_flushed() as on:
        torch.ones(1 << 20).mul_(1.0)  # a parallel kernel: the pool's threads start here
    return on
