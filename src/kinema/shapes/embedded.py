"""The embedded ShapesWorld model family that ships inside the package (the default of ``kinema generate``).

Layout (``src/kinema/shapes/embedded/``, the official diffusers layout plus two extra transformers)::

    model_index.json          EasyAnimateInpaintPipeline: the InP model (T2V + I2V)
    transformer/              InP transformer (33 input channels)
    vae/  text_encoder/  tokenizer/  scheduler/
    transformer_control/      Control transformer (48 input channels): trajectory control
    transformer_camera/       Camera transformer (38 input channels): camera control

The root folder is an ordinary model folder (``load_pipeline(embedded_model_path())`` reads it like any
other); the control and camera variants share its VAE, text encoder and scheduler and only swap the
transformer (``load_pipeline(root, transformer=embedded_transformer("control"))``), so the family costs one
VAE and one text encoder. See docs/shapesworld-model.md for why it is a family and not one model.
"""

from __future__ import annotations

from pathlib import Path

EMBEDDED_DIR = Path(__file__).resolve().parent / "embedded"
# Model type (kinema.pipelines.loading.model_type_from_channels) -> transformer folder in the family.
FAMILY_TRANSFORMERS = {
    "t2v": "transformer",
    "inp": "transformer",
    "control": "transformer_control",
    "camera": "transformer_camera",
}


def embedded_model_path() -> Path | None:
    """The packaged model folder, or None if the embedded model is not installed (not trained yet)."""
    return EMBEDDED_DIR if (EMBEDDED_DIR / "model_index.json").is_file() else None


def family_transformer(folder: str | Path, model_type: str) -> Path | None:
    """The transformer folder of ``folder``'s family serving ``model_type``, or None if it has none.

    ``t2v``/``inp`` use the root model's own ``transformer/`` (returned as None: nothing to swap).
    """
    if model_type not in FAMILY_TRANSFORMERS:
        raise ValueError(
            f"unknown model type {model_type!r}; expected one of {', '.join(FAMILY_TRANSFORMERS)}"
        )
    name = FAMILY_TRANSFORMERS[model_type]
    if name == "transformer":
        return None
    path = Path(folder) / name
    return path if (path / "config.json").is_file() else None


def embedded_transformer(model_type: str) -> Path | None:
    """The embedded family's transformer folder for ``model_type`` (None: use the root transformer)."""
    root = embedded_model_path()
    return family_transformer(root, model_type) if root is not None else None
