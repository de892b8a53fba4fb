"""Network speed: UNeXt vs U-Net on the CPU (the paper's ~9× claim), and every architecture on a GPU.

CPU mode (default): one 256×256 RGB image, batch 1, ``torch.set_num_threads(2)``, inference
(``torch.inference_mode``), warm-up passes then the median of many timed passes (interleaved rounds, so
that load from other processes falls on every model alike), for

- ``unext``   medseg's UNeXt (3 → 1),
- ``unext_released_ops``  the same weights run through the released code's operations (its shifted MLP:
  pad → chunk → ``torch.roll`` → narrow on (B, C, H, W), with transposes to tokens and back; its
  outputs are checked equal to medseg's first) — the peer "authors' code" of PERFORMANCE.md,
- ``unet``    medseg's U-Net (3 → 1, 31 M parameters), the paper's comparison.

Writes ``benchmarks/results/models_cpu.json`` (times, ratios, parameters, machine).

GPU mode (``--gpu``): images/s of every architecture in bf16 autocast, inference and a training step
(forward + backward + SGD), at 2D 512×512 (batch 8, channels-last) and 3D 128³ (batch 1) →
``benchmarks/results/models_gpu.json``. ``--device cpu --smoke`` runs the same code path on tiny
variants at small sizes (a check that the script works without a GPU; nothing is written).

Table mode (``--table``): parameters and multiply-accumulates of every architecture (counted on the meta
device with ``torch.utils.flop_counter.FlopCounterMode``, FLOPs / 2 = MACs, the unit of the papers'
"GFLOPs") next to the papers' figures → ``benchmarks/results/models_table.md``.

Usage: ``python benchmarks/models.py [--rounds 15] [--runs-per-round 5]``, ``python benchmarks/models.py --gpu``,
``python benchmarks/models.py --table``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from medseg.models import count_macs, create_model, list_models, model_spec  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


from common import machine  # noqa: E402  (benchmarks/common.py)


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# --- the released UNeXt operations, on medseg's weights -------------------------------------------

def _released_shift(x: torch.Tensor, dim: int, pad: int = 2) -> torch.Tensor:
    _, _, h, w = x.shape
    chunks = torch.chunk(F.pad(x, (pad, pad, pad, pad), "constant", 0), 2 * pad + 1, 1)
    shifted = torch.cat([torch.roll(c, s, dim) for c, s in zip(chunks, range(-pad, pad + 1))], 1)
    return torch.narrow(torch.narrow(shifted, 2, pad, h), 3, pad, w)


def _released_block(block, tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """shiftedBlock.forward of the released code: tokens (B, N, C) → (B, N, C) (without the trailing norm)."""
    b, n, c = tokens.shape
    mlp = block.mlp
    x = block.norm_in(tokens)
    x = _released_shift(x.transpose(1, 2).view(b, c, h, w).contiguous(), 2).reshape(b, c, n).transpose(1, 2)
    x = mlp.fc1(x)
    x = mlp.dwconv(x.transpose(1, 2).view(b, c, h, w)).flatten(2).transpose(1, 2)
    x = mlp.act(x)
    x = _released_shift(x.transpose(1, 2).view(b, c, h, w).contiguous(), 3).reshape(b, c, n).transpose(1, 2)
    return tokens + mlp.fc2(x)


def released_unext_forward(model, x: torch.Tensor) -> torch.Tensor:
    """UNext.forward of the released ``archs.py``, step by step, using ``model``'s (medseg UNeXt) weights."""
    b = x.shape[0]
    t = []
    out = x
    for stage in model.encoder:
        conv, bn = stage[0], stage[1]
        out = F.relu(F.max_pool2d(bn(conv(out)), 2, 2))
        t.append(out)

    def tokenized(stage, out):
        out = stage.embed(out)
        _, _, h, w = out.shape
        tokens = stage.embed_norm(out.flatten(2).transpose(1, 2))
        tokens = stage.block.norm_out(_released_block(stage.block, tokens, h, w))
        return tokens.reshape(b, h, w, -1).permute(0, 3, 1, 2).contiguous()

    out = tokenized(model.tokenized[0], out)
    t.append(out)
    out = tokenized(model.tokenized[1], out)
    for i, stage in enumerate(model.decoder[:4]):
        conv, bn = stage[0], stage[1]
        out = torch.add(F.relu(F.interpolate(bn(conv(out)), scale_factor=(2, 2), mode="bilinear")), t.pop())
        if i < 2:
            block = model.decoder_blocks[i]
            _, _, h, w = out.shape
            tokens = block.norm_out(_released_block(block, out.flatten(2).transpose(1, 2), h, w))
            out = tokens.reshape(b, h, w, -1).permute(0, 3, 1, 2).contiguous()
    out = F.relu(F.interpolate(model.decoder[4][0](out), scale_factor=(2, 2), mode="bilinear"))
    return model.head(out)


# --- timing -----------------------------------------------------------------------------------------

def time_interleaved(entries: dict, x: torch.Tensor, warmup: int, rounds: int) -> dict[str, list[float]]:
    """Wall-clock seconds per pass of each ``fn(x)``, measured in interleaved rounds.

    ``entries``: name → (fn, passes per round). Every round runs each entry's passes in turn, so that load
    from other processes on a shared machine falls on all entries alike; ``warmup`` untimed passes first.
    """
    times: dict[str, list[float]] = {name: [] for name in entries}
    with torch.inference_mode():
        for fn, _ in entries.values():
            for _ in range(warmup):
                fn(x)
        for _ in range(rounds):
            for name, (fn, passes) in entries.items():
                for _ in range(passes):
                    start = time.perf_counter()
                    fn(x)
                    times[name].append(time.perf_counter() - start)
    return times


def cpu_benchmark(rounds: int, runs_per_round: int, warmup: int) -> dict:
    torch.set_num_threads(2)
    torch.manual_seed(0)
    x = torch.randn(1, 3, 256, 256)
    unext = create_model("unext", 3, 1).eval()
    unet = create_model("unet", 3, 1).eval()
    with torch.inference_mode():
        ours, released = unext(x), released_unext_forward(unext, x)
    if (ours - released).abs().max() > 1e-5 * ours.abs().max():  # float32 summation-order noise only
        raise SystemExit("the released-ops UNeXt forward does not reproduce medseg's output")
    entries = {
        "unext": (unext, runs_per_round),
        "unext_released_ops": (lambda inp: released_unext_forward(unext, inp), runs_per_round),
        "unet": (unet, 1),
    }
    results = {}
    for name, times in time_interleaved(entries, x, warmup, rounds).items():
        results[name] = {"median_ms": 1e3 * statistics.median(times), "min_ms": 1e3 * min(times), "runs": len(times)}
        print(f"{name:20s} median {results[name]['median_ms']:8.1f} ms  (min {results[name]['min_ms']:.1f}, {len(times)} runs)")
    ratio = results["unet"]["median_ms"] / results["unext"]["median_ms"]
    ratio_min = results["unet"]["min_ms"] / results["unext"]["min_ms"]  # less sensitive to a busy machine
    vs_released = results["unext_released_ops"]["median_ms"] / results["unext"]["median_ms"]
    print(f"U-Net / UNeXt = {ratio:.1f}× (of minimums: {ratio_min:.1f}×) (paper: 223 / 25 ms = 8.9×); released ops / medseg UNeXt = {vs_released:.2f}×")
    return {
        "benchmark": "models_cpu",
        "input": "1×3×256×256, batch 1, float32, torch.inference_mode, 2 threads",
        "method": f"{warmup} warm-up passes each, then {rounds} interleaved rounds of {runs_per_round} UNeXt passes, "
                  f"{runs_per_round} released-ops passes and 1 U-Net pass; medians",
        "times": results,
        "ratio_unet_over_unext": ratio,
        "ratio_unet_over_unext_min": ratio_min,
        "load_average": list(os.getloadavg()),
        "ratio_released_ops_over_unext": vs_released,
        "paper": {"unext_ms": 25, "unet_ms": 223, "ratio": 223 / 25},
        "params": {"unext": _params(unext), "unet": _params(unet)},
        "machine": machine(),
    }


def gpu_benchmark(device: str, smoke: bool, seconds: float) -> dict:
    """Images/s per architecture in bf16 autocast: inference and one training step (fwd + bwd + SGD)."""
    names = [n for n in list_models() if n.endswith("_tiny") == smoke]
    results = {}
    for name in names:
        spec = model_spec(name)
        if smoke:
            shape, batch = ((64, 64), 2) if spec.spatial_dims == 2 else ((32, 32, 32), 1)
        else:
            shape, batch = ((512, 512), 8) if spec.spatial_dims == 2 else ((128, 128, 128), 1)
        in_channels = 3 if spec.spatial_dims == 2 else 1
        torch.manual_seed(0)
        model = create_model(name, in_channels, 2).to(device)
        x = torch.randn(batch, in_channels, *shape, device=device)
        memory_format = torch.channels_last if spec.spatial_dims == 2 else torch.contiguous_format
        model = model.to(memory_format=memory_format)
        x = x.contiguous(memory_format=memory_format)
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-4)
        device_type = torch.device(device).type

        def infer():
            with torch.inference_mode(), torch.autocast(device_type, dtype=torch.bfloat16):
                model.eval()(x)

        def train_step():
            model.train()
            with torch.autocast(device_type, dtype=torch.bfloat16):
                out = model(x)
                loss = sum(o.float().mean() for o in (out if isinstance(out, list) else [out]))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        entry = {"input": [batch, *x.shape[1:]], "params": _params(model)}
        for label, fn in (("inference", infer), ("train_step", train_step)):
            try:
                entry[f"{label}_images_per_s"] = batch / _time_device(fn, device, seconds)
            except torch.OutOfMemoryError:
                entry[f"{label}_images_per_s"] = None
                entry[f"{label}_error"] = "out of memory"
                torch.cuda.empty_cache()
        print(f"{name:12s} {entry}", flush=True)
        results[name] = entry
        del model, optimizer, x
        if device_type == "cuda":
            torch.cuda.empty_cache()
    return {"benchmark": "models_gpu", "dtype": "bfloat16 autocast", "device": device, "results": results, "machine": machine()}


def _time_device(fn, device: str, seconds: float, warmup: int = 3) -> float:
    """Median seconds per call of ``fn``, synchronizing the device; runs for about ``seconds``."""
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    times = []
    budget = time.perf_counter() + seconds
    while len(times) < 5 or (time.perf_counter() < budget and len(times) < 200):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# --- the README table --------------------------------------------------------------------------

TABLE = [  # name, in_channels, num_classes, input, paper's parameters / MACs (source), departures
    ("unet", 3, 1, (256, 256), "31.13 M / 55.84 G (UNeXt paper, Table 1)",
     "padded convs + batch norm (paper: valid convs, no norm); transposed-conv up-sampling as in the paper"),
    ("unext", 3, 1, (256, 256), "1.47 M / 0.57 G (UNeXt paper)",
     "`in_channels` honoured (released code: fixed 3); shift implemented channels-last (same result)"),
    ("cm_mlp", 3, 1, (256, 256), "not reported",
     "fixed grid/block cascade MLP (any size ÷ 32); multi-class maps; encoder from scratch unless `encoder_weights`"),
    ("unet3d", 1, 2, (128, 128, 128), "19,069,955 params (3D U-Net paper); MACs not reported",
     "padded convs (paper: valid); optional deep-supervision heads (on by default; excluded from the count here)"),
    ("vnet", 1, 2, (128, 128, 128), "not reported",
     "batch norm after each conv (paper: none); own implementation (MONAI's VNet has other stage depths)"),
]


def table() -> str:
    """Markdown table of parameters and MACs (meta device, one image) next to the papers' figures."""
    lines = [
        "| arch | input (B=1) | classes | parameters | MACs | paper | departures |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, cin, k, size, paper, notes in TABLE:
        options = {"deep_supervision": False} if model_spec(name).deep_supervision else {}
        macs = count_macs(name, cin, k, size, **options)
        with torch.device("meta"):
            model = create_model(name, cin, k, **options)
        shape = "×".join(map(str, size)) + f"×{cin}ch"
        lines.append(f"| `{name}` | {shape} | {k} | {_params(model) / 1e6:.2f} M | {macs / 1e9:.2f} G | {paper} | {notes} |")
    lines += [
        "",
        "MACs = multiply-accumulates of convolutions and matrix products for one forward pass (FlopCounterMode "
        "FLOPs / 2, the unit that ptflops/thop and the papers call \"GFLOPs\"); normalization, activations, "
        "pooling and interpolation are not counted. Deep-supervision heads are off for these counts.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds (CPU mode): 1 U-Net pass each")
    parser.add_argument("--runs-per-round", type=int, default=5, help="UNeXt passes per round (CPU mode)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--gpu", action="store_true", help="images/s of every architecture in bf16 (needs CUDA)")
    parser.add_argument("--device", default="cuda", help="device of --gpu mode (cpu only with --smoke)")
    parser.add_argument("--smoke", action="store_true", help="--gpu code path on tiny variants; writes nothing")
    parser.add_argument("--seconds", type=float, default=5.0, help="time per measurement in --gpu mode")
    parser.add_argument("--table", action="store_true", help="write the parameters/MACs table (no timing)")
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.table:
        text = table()
        (RESULTS / "models_table.md").write_text(text)
        print(text)
        return
    if args.gpu:
        if args.device.startswith("cuda") and not torch.cuda.is_available():
            raise SystemExit("--gpu needs CUDA (use --device cpu --smoke to check the script)")
        report = gpu_benchmark(args.device, args.smoke, 0.2 if args.smoke else args.seconds)
        out = None if args.smoke else RESULTS / "models_gpu.json"
    else:
        report = cpu_benchmark(args.rounds, args.runs_per_round, args.warmup)
        out = RESULTS / "models_cpu.json"
    if out is not None:
        out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
