"""`python -m skillgraft.train CONFIG [--set k=v]... [--json] [--resume]`.

The entry point for `accelerate launch -m skillgraft.train CONFIG` (multi-GPU, multi-CPU,
DeepSpeed ZeRO-3): the same `train` verb, with the same error handling.
"""

import sys

from skillgraft.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
