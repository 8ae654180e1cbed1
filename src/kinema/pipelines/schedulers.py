"""Sampler names -> diffusers schedulers, configured from the model's own ``scheduler/`` config.

kinema does not reimplement samplers: every name maps onto a diffusers scheduler class and config.
A model is *flow-matching* (all EasyAnimate V5.1 checkpoints) when its scheduler config is a flow-matching
class or uses flow sigmas / ``flow_prediction``; otherwise it is a DDPM-style (epsilon / v) model.

Flow-matching models (the transformer predicts the velocity ``noise - x``):

=========  ==========================================================================================
flow       ``FlowMatchEulerDiscreteScheduler`` exactly as the model's config says; ``set_timesteps(n,
           mu=1)`` as EasyAnimate's pipelines do (with ``use_dynamic_shifting`` that is a shift of e).
euler      the same scheduler: deterministic Euler on the flow ODE *is* the flow sampler.
euler_a    ``FlowMatchEulerDiscreteScheduler(stochastic_sampling=True)``: each step predicts x0 and
           re-noises it to the next sigma with fresh noise from the generator (ancestral Euler).
dpm++      ``DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_order=2,
           prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=s)``.
unipc      ``UniPCMultistepScheduler`` with the same flow settings.
ddim/pndm  refused: diffusers' DDIM and PNDM have no flow-matching mode. (Deterministic DDIM on a
           flow ODE is exactly the Euler step, so ``flow`` is what DDIM would compute.)
=========  ==========================================================================================

``s`` is the shift the official schedule applies: ``exp(mu) = e`` with dynamic shifting, else the
config's ``shift``. DPM++/UniPC space their sigmas slightly differently from ``flow`` (1 - 1/1000 ...
1/n instead of 1 ... 1/1000, both shifted by ``s``), so they are different discretisations of the same
ODE, not bit-identical runs.

DDPM-style models: ``euler`` -> ``EulerDiscreteScheduler``, ``euler_a`` -> ``EulerAncestralDiscrete
Scheduler``, ``dpm++`` -> ``DPMSolverMultistepScheduler``, ``unipc`` -> ``UniPCMultistepScheduler``,
``ddim`` -> ``DDIMScheduler``, ``pndm`` -> ``PNDMScheduler``, each ``from_config`` of the model's
config (so beta schedule and prediction type carry over); ``flow`` is refused.
"""

from __future__ import annotations

import math
from typing import Any

SAMPLERS = ("flow", "euler", "euler_a", "dpm++", "unipc", "ddim", "pndm")
# EasyAnimate's pipelines call set_timesteps(n, mu=1) on flow-matching schedulers.
EASYANIMATE_MU = 1.0

FLOW_SCHEDULER_CLASSES = frozenset(
    {"FlowMatchEulerDiscreteScheduler", "FlowMatchHeunDiscreteScheduler", "FlowMatchLCMScheduler"}
)
_DDPM_CLASSES = {
    "euler": "EulerDiscreteScheduler",
    "euler_a": "EulerAncestralDiscreteScheduler",
    "dpm++": "DPMSolverMultistepScheduler",
    "unipc": "UniPCMultistepScheduler",
    "ddim": "DDIMScheduler",
    "pndm": "PNDMScheduler",
}


def _diffusers_schedulers():
    try:
        import diffusers.schedulers as schedulers
    except ImportError as e:  # pragma: no cover - diffusers is a dependency of the pipelines
        raise ImportError(
            "kinema's pipelines use diffusers' schedulers: pip install 'diffusers>=0.32'"
        ) from e
    return schedulers


def is_flow_matching(config: dict[str, Any]) -> bool:
    """Is a scheduler config (dict of scheduler_config.json) that of a flow-matching model?"""
    return (
        config.get("_class_name") in FLOW_SCHEDULER_CLASSES
        or config.get("prediction_type") == "flow_prediction"
        or bool(config.get("use_flow_sigmas"))
    )


def flow_shift(config: dict[str, Any], mu: float = EASYANIMATE_MU) -> float:
    """The sigma shift the official flow schedule applies: e^mu with dynamic shifting, else ``shift``."""
    if config.get("use_dynamic_shifting"):
        if config.get("time_shift_type", "exponential") != "exponential":
            raise ValueError("only the exponential dynamic time shift can be mapped onto DPM++/UniPC")
        return math.exp(mu)
    return float(config.get("flow_shift", config.get("shift", 1.0)))


def make_scheduler(sampler: str, model_config: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """A fresh diffusers scheduler for ``sampler`` and the extra ``set_timesteps`` kwargs it needs.

    ``model_config`` is the model's ``scheduler/scheduler_config.json``. Raises ValueError for unknown
    names and for combinations that cannot work (ddim/pndm on flow models, flow on DDPM models).
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
    schedulers = _diffusers_schedulers()
    config = {k: v for k, v in model_config.items() if not k.startswith("_")}
    if is_flow_matching(model_config):
        if sampler in ("ddim", "pndm"):
            raise ValueError(
                f"sampler {sampler!r} cannot sample this flow-matching model: diffusers' {sampler.upper()} "
                "scheduler has no flow-matching mode (deterministic DDIM on a flow ODE is the Euler step: "
                "use --sampler flow); flow-capable samplers: flow, euler, euler_a, dpm++, unipc"
            )
        base = model_config.get("_class_name", "FlowMatchEulerDiscreteScheduler")
        if sampler in ("flow", "euler", "euler_a"):
            if base != "FlowMatchEulerDiscreteScheduler":
                raise ValueError(
                    f"sampler {sampler!r} needs a FlowMatchEulerDiscreteScheduler config; the model's is {base}"
                )
            cls = schedulers.FlowMatchEulerDiscreteScheduler
            scheduler = cls.from_config(config, stochastic_sampling=sampler == "euler_a")
            return scheduler, {"mu": EASYANIMATE_MU}
        flow_kwargs = dict(
            num_train_timesteps=int(config.get("num_train_timesteps", 1000)),
            prediction_type="flow_prediction",
            use_flow_sigmas=True,
            flow_shift=flow_shift(model_config),
            solver_order=2,
        )
        if sampler == "dpm++":
            return schedulers.DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", **flow_kwargs), {}
        return schedulers.UniPCMultistepScheduler(**flow_kwargs), {}
    if sampler == "flow":
        raise ValueError(
            f"sampler 'flow' needs a flow-matching model; this model's scheduler is "
            f"{model_config.get('_class_name', '?')} (DDPM-style): use euler, euler_a, dpm++, unipc, ddim or pndm"
        )
    cls = getattr(schedulers, _DDPM_CLASSES[sampler])
    return cls.from_config(config), {}
