"""Knowledge injection on the lab world (issue 7): memorised is not the same as extractable.

Modules: `world` (people, biographies, questions), `model` (tiny Llama + training jobs),
`metrics` (memorisation and extraction from saved generations), `conditions` (the study's
cells), `study` (runs cells, writes the output folder), `plots`, `cli` (the command).
"""
