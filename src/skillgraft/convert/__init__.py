"""Converting other model formats into ordinary checkpoint folders (`skillgraft convert ...`).

Everything else in skillgraft reads Hugging Face checkpoint folders; a model that ships only
as a GGUF file (llama.cpp's format, how many small chat models are distributed) becomes one
here, once, so extract / graft / train / eval work on it unchanged.
"""
