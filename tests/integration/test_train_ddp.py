"""`torchrun --nproc_per_node 2 -m medseg train ...` on CPU (gloo): identical weights, files written once."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

TORCHRUN = Path(sys.executable).with_name("torchrun")


def run_in_own_group(command: list[str], env: dict, timeout: float) -> subprocess.CompletedProcess:
    """Run ``command`` in its own process group; on timeout kill the whole group (torchrun's workers too),
    so that a hung run never leaves orphan processes behind."""
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail(f"torchrun did not finish within {timeout} s: {stderr[-2000:]}")
    return subprocess.CompletedProcess(command, proc.returncode, stdout, stderr)


@pytest.mark.slow
@pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun is not installed beside this Python")
def test_two_processes_end_with_identical_weights(tmp_path):
    from medseg.ingest import ingest
    from medseg.models import create_model
    from medseg.phantoms import write_ct_dataset
    from medseg.runs import load_checkpoint
    from medseg.training.curves import read_log
    from medseg.training.distributed import state_hash

    write_ct_dataset(tmp_path / "raw", n_cases=4, shape=(32, 32, 16), orientations=("RAS",))
    ingest(tmp_path / "raw", "ph", data_root=tmp_path / "data", folds=2)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    command = [str(TORCHRUN), "--standalone", "--nproc_per_node", "2", "-m", "medseg", "train", "ph",
               "--arch", "unet3d_tiny", "--data-dir", str(tmp_path / "data"), "--models-dir", str(tmp_path / "models"),
               "--device", "cpu", "--epochs", "2", "--iterations-per-epoch", "2", "--batch-size", "2",
               "--patch-size", "16x16x16", "--workers", "0", "--val-every", "1"]
    done = run_in_own_group(command, env, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    hashes = dict(re.findall(r"rank (\d)/2: final weights sha256\s+([0-9a-f]{64})", done.stderr))
    assert set(hashes) == {"0", "1"} and hashes["0"] == hashes["1"], done.stderr[-3000:]
    assert "effective batch 4 (2 × 2 processes)" in " ".join(done.stderr.split())

    run = tmp_path / "models" / "ph_unet3d_tiny_fold0"
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint_best.pt", "checkpoint_last.pt", "config.yaml",
                                                     "curves.png", "log.csv"]  # no stray temporary files
    rows = read_log(run / "log.csv")
    assert [r["epoch"] for r in rows] == ["1", "2"] and rows[-1]["effective_batch"] == "4"  # written once
    ckpt = load_checkpoint(run / "checkpoint_last.pt")
    model = create_model(ckpt["arch"], ckpt["in_channels"], ckpt["num_classes"])
    model.load_state_dict(ckpt["model"])
    assert state_hash(model) == hashes["0"]  # the saved weights are the ones both ranks ended with
