"""Exponential moving average of a model's weights (Polyak averaging), kept beside the trained weights.

    ema = EMA(model, decay=0.999)      # after each optimiser step: ema.update(model)
    ema.state_dict()                   # the averaged weights, a state dict of `model` (saved in resume checkpoints)

theta_ema <- decay * theta_ema + (1 - decay) * theta after every step; buffers (running statistics, a
codebook's usage counts) are copied as they are. Early on the average is dominated by the random start, so the
effective decay warms up as min(decay, (1 + n) / (10 + n)) after n updates (as in timm's and TF's EMA).
The average is kept in fp32 on the model's device; `train/release.py --ema` releases it.
"""
from __future__ import annotations

import torch
from torch import nn


class EMA:
    """The moving average of `model`'s floating-point parameters; a state dict of the same keys."""

    def __init__(self, model: nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema decay must lie in (0, 1), got {decay}")
        self.decay, self.updates = decay, 0
        self.shadow = {k: v.detach().clone().float() if v.is_floating_point() else v.detach().clone()
                       for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        self.updates += 1
        params = dict(model.named_parameters())
        for k, v in model.state_dict().items():
            if k in params and v.is_floating_point():
                self.shadow[k].lerp_(v.float(), 1.0 - d)  # shadow += (1 - d) * (v - shadow)
            else:
                self.shadow[k].copy_(v)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "updates": self.updates, "weights": dict(self.shadow)}

    def load_state_dict(self, state: dict) -> None:
        """Restore from a resume checkpoint; ValueError if it does not fit this model."""
        weights = state.get("weights") if isinstance(state, dict) else None
        if not isinstance(weights, dict) or set(weights) != set(self.shadow):
            raise ValueError("the EMA weights do not match the model's keys")
        for k, v in weights.items():
            if not isinstance(v, torch.Tensor) or v.shape != self.shadow[k].shape:
                raise ValueError(f"the EMA weight {k} does not fit the model")
            self.shadow[k].copy_(v)
        self.updates = int(state.get("updates", 0))

    def weights(self, like: nn.Module) -> dict:
        """The averaged weights in the dtypes of `like`'s state dict (for load_state_dict)."""
        own = like.state_dict()
        return {k: v.to(own[k].dtype) for k, v in self.shadow.items()}
