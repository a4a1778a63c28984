"""Function-preserving widening of a trained codec (Net2Net-style, with zero-initialised links).

A wider model (more transform channels ``N``, more latent channels ``M``, more quality ``levels``)
starts as an exact copy of a narrower one, so that training it begins from the narrow codec's
quality instead of from scratch::

    old weights W [out, in]  ->  new weights [out', in']:
                                   [ W                 0 (new inputs)   ]   old outputs
                                   [ fresh init        fresh init       ]   new outputs

* A new transform channel gets fresh incoming weights and zero outgoing weights, so it computes
  something (and so receives gradients) without yet changing anything downstream. GDN's coupling
  of an old channel to a new one starts at zero the same way.
* A new latent channel is the other way round: the analysis writes zero into it (zero weights
  and bias), the synthesis and hyper analysis read it with fresh weights, so it is 0 (costing no
  bits: its hyperprior mean is 0 and its scale small) until training makes it useful.
* New quality levels extrapolate the log gains of the two highest old levels.

The entropy context (``slices``) is left out: a widened model is a hyperprior model, and
``cps-tiles train-context`` trains its context afterwards, as for r7 and r8.
"""

from __future__ import annotations

import math

import torch

from ..transforms.model import CPSModel, ModelConfig

#: Hyperprior scale of a new latent channel before training: small, so coding its zeros is cheap.
_NEW_LATENT_SCALE = 0.05


def _old_positions(old: int, new: int, halves: bool) -> torch.Tensor:
    """Indices in a widened dimension of size ``new`` where the ``old`` entries go: a prefix, or
    for a [means | scales] dimension (``halves``) the start of each half."""
    idx = torch.arange(old)
    return torch.where(idx < old // 2, idx, idx - old // 2 + new // 2) if halves else idx


def widen(narrow: CPSModel, config: ModelConfig, seed: int = 0) -> CPSModel:
    """A ``config``-shaped model that computes exactly what ``narrow`` computes (up to float rounding),
    at every quality level ``narrow`` has. ``config`` may grow N, M and levels; Nz is kept."""
    old = narrow.config
    if config.N < old.N or config.M < old.M or config.levels < old.levels or config.Nz != old.Nz:
        raise ValueError(f"cannot widen {old} to {config}: N, M and levels may only grow, Nz stays")
    if config.slices:
        raise ValueError("a widened model has no entropy context; train one with cps-tiles train-context")
    torch.manual_seed(seed)
    wide = CPSModel(config)
    narrow_state = narrow.state_dict()
    modules = dict(wide.named_modules())
    state = wide.state_dict()
    for name, new in state.items():
        if name.startswith("context.") or name in ("log_gain", "log_inv_gain"):
            continue
        w = narrow_state[name].to(new.dtype)
        module_name, _, kind = name.rpartition(".")
        module = modules[module_name]
        transposed = isinstance(module, torch.nn.ConvTranspose2d)
        out_dim = 1 if transposed and kind == "weight" else 0
        in_dim = 1 - out_dim if w.dim() >= 2 else None
        halves = module_name == "h_s.4"  # its outputs are [means | scales]
        produces_latent = module_name == "g_a.6"
        target = new.clone()
        if in_dim is not None and new.shape[in_dim] > w.shape[in_dim] and not _reads_latent(module_name):
            target.narrow(in_dim, w.shape[in_dim], new.shape[in_dim] - w.shape[in_dim]).zero_()
        if new.shape[out_dim] > w.shape[out_dim]:
            fresh = torch.ones(new.shape[out_dim], dtype=torch.bool)
            fresh[_old_positions(w.shape[out_dim], new.shape[out_dim], halves)] = False
            if produces_latent:
                target.index_fill_(out_dim, fresh.nonzero()[:, 0], 0.0)
            elif halves:
                _init_new_latent_params(target, fresh, config.M, kind)
        index = [_old_positions(w.shape[d], new.shape[d], halves and d == out_dim) for d in range(w.dim())]
        target[torch.meshgrid(*index, indexing="ij")] = w
        state[name] = target
    for name in ("log_gain", "log_inv_gain"):
        state[name] = _widen_gains(narrow_state[name], config.levels, config.M)
    wide.load_state_dict(state)
    return wide


def _reads_latent(module_name: str) -> bool:
    """The layers whose input is the latent y: a new latent channel is zero, so they may read it
    with fresh weights from the start (and must, or neither side of it would ever train)."""
    return module_name in ("g_s.0", "h_a.0")


def _init_new_latent_params(target: torch.Tensor, fresh: torch.Tensor, M: int, kind: str) -> None:
    """Hyperprior outputs of new latent channels: mean 0 and a small constant scale."""
    means, scales = fresh.clone(), fresh.clone()
    means[M:], scales[:M] = False, False
    if kind == "weight":
        target[fresh] = 0.0
    else:
        target[means] = 0.0
        target[scales] = math.log(math.expm1(_NEW_LATENT_SCALE))  # softplus^-1


def _widen_gains(log_gains: torch.Tensor, levels: int, M: int) -> torch.Tensor:
    """``[L, M_old]`` log gains -> ``[levels, M]``: new channels take each level's mean gain, new
    levels continue the step between the two highest old levels."""
    old_levels = log_gains.shape[0]
    out = torch.empty(levels, M, dtype=log_gains.dtype)
    out[:old_levels, : log_gains.shape[1]] = log_gains
    out[:old_levels, log_gains.shape[1] :] = log_gains.mean(dim=1, keepdim=True)
    step = out[old_levels - 1] - out[old_levels - 2]
    for k in range(old_levels, levels):
        out[k] = out[k - 1] + step
    return out
