"""ShapesWorld: a procedural video world with exact ground truth, prompts in four languages and an evaluator.

Modules: ``spec`` (vocabulary, SceneSpec, held-out split), ``world`` (sampling and rendering),
``camera`` (CameraCtrl poses), ``prompts`` (generation/parsing), ``detect`` + ``evaluate``
(the evaluator), ``dataset`` (training-set writer), ``corrupt`` (evaluator self-checks).
Names are imported lazily so ``python -m kinema.shapes.evaluate`` runs without a double import.
"""

from importlib import import_module
from typing import Any

_LAZY = {
    # spec
    "BACKGROUNDS": ".spec",
    "CAMERAS": ".spec",
    "COLORS": ".spec",
    "DIRECTIONS": ".spec",
    "HELD_OUT_COMBOS": ".spec",
    "PATHS": ".spec",
    "SHAPES": ".spec",
    "STATIC": ".spec",
    "TRAINING_COMBOS": ".spec",
    "ObjectSpec": ".spec",
    "SceneSpec": ".spec",
    "held_out_specs": ".spec",
    "is_held_out": ".spec",
    "spec_is_held_out": ".spec",
    "training_specs": ".spec",
    # world
    "Clip": ".world",
    "Scene": ".world",
    "random_clip": ".world",
    "render_from_spec": ".world",
    "render_scene": ".world",
    "sample_scene": ".world",
    # camera
    "CameraPoses": ".camera",
    "camera_label_from_poses": ".camera",
    "plane_image_motion": ".camera",
    "poses_from_centers": ".camera",
    "read_pose_file": ".camera",
    "write_pose_file": ".camera",
    # prompts
    "LANGUAGES": ".prompts",
    "detect_language": ".prompts",
    "make_prompt": ".prompts",
    "make_prompts": ".prompts",
    "parse_prompt": ".prompts",
    # evaluator
    "ClipResult": ".evaluate",
    "Conditions": ".evaluate",
    "evaluate_clip": ".evaluate",
    "evaluate_clips": ".evaluate",
    "format_table": ".evaluate",
    "psnr": ".evaluate",
    "reconstruction_psnr": ".evaluate",
    "write_results_json": ".evaluate",
    # dataset
    "evaluate_dataset": ".dataset",
    "load_metadata": ".dataset",
    "read_video": ".dataset",
    "write_dataset": ".dataset",
    "write_video": ".dataset",
    # embedded model family
    "embedded_model_path": ".embedded",
    "embedded_transformer": ".embedded",
    "family_transformer": ".embedded",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
