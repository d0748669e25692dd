"""`accelerate launch -m skillgraft.train`: a two-process CPU (gloo) run that trains."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import yaml

from persona_world import build_world

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_process_cpu_run_trains(tmp_path):
    world = build_world(tmp_path / "world", n_persona=32)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "model": str(world["model"]), "method": "lora", "lr": 1e-2, "max_steps": 12, "batch_size": 4, "seed": 0,
        "output_dir": str(tmp_path / "run"), "progress": False, "data": {"train": str(world["persona"])},
        "lora": {"r": 8, "alpha": 16, "targets": "attn-qv"}, "monitor": {"enabled": False}}))
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    accelerate = [sys.executable, "-m", "accelerate.commands.launch"]
    cmd = [*accelerate, "--config_file", str(ROOT / "recipes" / "accelerate" / "cpu_2proc.yaml"),
           "--main_process_port", str(_free_port()), "-m", "skillgraft.train", str(config), "--json"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    start = proc.stdout.index("{")  # accelerate may print before it
    out, end = json.JSONDecoder().raw_decode(proc.stdout[start:])
    assert "{" not in proc.stdout[start + end:]  # only the main process reports
    assert out["world_size"] == 2
    losses = [loss for _, loss in out["losses"]]
    assert len(losses) == 12 and sum(losses[-3:]) / 3 < losses[0] - 0.05
    assert Path(out["adapter_dir"], "adapter_model.safetensors").is_file()
    assert json.loads(Path(out["adapter_dir"], "skillgraft.json").read_text())["kind"] == "adapter"
