"""Shared by the `skillgraft train` tests (CPU and GPU): a config file for the tiny training
world, and one `train --json` run parsed."""

from __future__ import annotations

import json

import yaml

from skillgraft.cli import main


def train_config(tmp_path, world, **overrides):
    """Write a small LoRA config for `world` (from `train.fixtures.build_world`); dotted keys
    (`lora.targets=...`) override nested fields."""
    config = {
        "model": str(world["model"]), "method": "lora", "lr": 1e-2, "max_steps": 12, "batch_size": 8, "seed": 0,
        "output_dir": str(tmp_path / "run"), "progress": False, "save_steps": 100,
        "data": {"train": str(world["persona"]), "format": "text", "max_length": 32},
        "lora": {"r": 8, "alpha": 16, "targets": "attn-qv"},
        "monitor": {"enabled": False},
    }
    for key, value in overrides.items():
        node = config
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def train_json(capsys, config, *args) -> dict:
    """Run `skillgraft train CONFIG --json`; assert it succeeded; return the parsed report."""
    rc = main(["train", str(config), "--json", *args])
    captured = capsys.readouterr()
    assert rc == 0, captured.err[-3000:]
    return json.loads(captured.out)
