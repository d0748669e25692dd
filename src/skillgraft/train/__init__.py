"""Training layer: LoRA / QLoRA / full fine-tuning on transformers Trainer + peft.

Import `skillgraft.train.run.train` and `skillgraft.train.config.load_train_config` for the API;
this package file stays empty so the CLI can import `skillgraft.train.cli` cheaply.
"""
