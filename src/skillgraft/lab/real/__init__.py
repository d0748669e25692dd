"""`lab real`: the seeds' experiments on a real pretrained chat model (SmolLM2-135M-Instruct).

Knowledge injection (seed 003), a persona LoRA (seed 002) and a skill vector on real weights
(seeds 000/001/004), each with controls and several seeds, on the product's own layers:
`train`, `run_suite`, `extract`/`graft`, and the lab's worker processes.
"""
