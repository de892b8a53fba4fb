"""Device memory and the mixed-precision decision (pure where it can be); the device itself: ``medseg.devices``."""

from __future__ import annotations

from medseg.errors import ConfigError


def device_memory_bytes(device) -> int | None:
    """Total memory of a CUDA device; None elsewhere (the planner then uses its CPU budget)."""
    import torch

    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory)
    return None


def choose_amp_dtype(device_type: str, bf16_supported: bool, mode: str = "auto"):
    """The autocast dtype for training, or None for full fp32.

    ``auto``: bf16 on CUDA when supported, else fp16 (with a gradient scaler); bf16 on a CPU with native
    bf16 instructions (AVX512-BF16 or AMX: training steps measured 1.6-1.9× faster on such a CPU, figures
    in the README); off on other CPUs and on MPS.
    ``bf16``: bf16 anywhere it is supported (CPU autocast supports it); ``fp16``: CUDA only; ``off``: None.
    """
    import torch

    if mode == "off":
        return None
    if mode == "auto":
        if device_type == "cuda":
            return torch.bfloat16 if bf16_supported else torch.float16
        return torch.bfloat16 if device_type == "cpu" and bf16_supported else None
    if mode == "bf16":
        if device_type == "cuda" and not bf16_supported:
            raise ConfigError("--amp bf16: this GPU does not support bfloat16; use fp16 or auto")
        if device_type == "mps":
            raise ConfigError("--amp bf16: not supported on MPS; use off")
        return torch.bfloat16
    if mode == "fp16":
        if device_type != "cuda":
            raise ConfigError(f"--amp fp16 needs CUDA (device is {device_type}); use bf16 or off")
        return torch.float16
    raise ConfigError(f"amp mode {mode!r}: expected auto, off, bf16 or fp16")


def amp_label(device_type: str, dtype, native_bf16: bool) -> str:
    """How the plan names the training precision; warns when bf16 was asked for on a CPU that only
    emulates it (measured on an AVX2-only CPU: a ``unet3d`` step 70× slower than in fp32)."""
    import torch

    if dtype is None:
        return "off"
    if dtype == torch.float16:
        return "fp16 + gradient scaling"
    if device_type == "cpu" and not native_bf16:
        return "bf16 (emulated on this CPU, which lacks AVX512-BF16 and AMX: far slower than --amp off)"
    return "bf16"


def needs_grad_scaler(dtype) -> bool:
    """fp16 gradients underflow without loss scaling; bf16 and fp32 do not need it."""
    import torch

    return dtype == torch.float16
