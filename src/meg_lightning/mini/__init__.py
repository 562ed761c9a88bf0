"""MEG-mini: a small text-to-image model (SD-v1.5 architecture) that this project trains and ships.

- :mod:`~meg_lightning.mini.dataset`: procedural captioned shapes (64x64) and the held-out prompts;
- :mod:`~meg_lightning.mini.model`: the word-level CLIP tokenizer and the small SD components;
- :mod:`~meg_lightning.mini.train`: ``make train-mini`` (Lightning, CPU, about an hour);
- :mod:`~meg_lightning.mini.classifier`: the attribute CNN (semantic accuracy, mini-FID features).

The trained pipeline ships in ``weights/pipeline`` (a diffusers folder) and loads with
``load_pipeline(load_config(["model=mini"]))``; see docs/MINI.md for the model card.
"""

from pathlib import Path

from meg_lightning.generation import MINI_PIPELINE_DIR

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
PIPELINE_DIR = MINI_PIPELINE_DIR  # StableDiffusionPipeline.save_pretrained output
