"""The lab: a synthetic two-language world, tiny models trained on it, and the demo.

`skillgraft.lab.world` generates the data, `train` builds and trains tiny Llama models,
`build` runs `lab build`, `evaluate` scores generations, `demo` runs the graft demo on the
shipped checkpoints (`skillgraft/lab/shipped/`).
"""
