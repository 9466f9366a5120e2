"""One module per operation, each a function that reads top to bottom with numbered steps, like diffusers'
`StableDiffusionPipeline.__call__`; `engine/pipeline.py`'s Runner loads the pipelines and dispatches to them.

    imagine.py    text to image (imagine, reroll), one job or a batch of jobs with one key
    variation.py  image to image from a chosen picture (V1-V4, Vary, image prompts), one job or a batch
    upscale.py    one picture at twice its size (Lanczos, then a detail pass or a dedicated upscaler)
    outpaint.py   Zoom Out and Pan: a larger canvas painted around the source, whose pixels are kept
    common.py     the steps they share: progress and cancellation, prompts, the safety checker, PNGs and the grid

Only the engine's worker thread calls these (through the Runner), so no locks are needed.
"""
