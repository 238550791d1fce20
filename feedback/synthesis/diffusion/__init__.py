"""The local generators: diffusers pipelines (GLIGEN, SD inpainting, Qwen-Image) on this machine's GPU (gpu-gen).

diffusers and torch load only in these modules; `diffusers_common` and `diffusers_run` hold what they share.
"""
