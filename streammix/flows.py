r"""Conditional normalizing flows for the background, p(x | phi1), with missing data.

The mixture's background is a product over *blocks* of coordinates of
conditional densities given phi1, for example p(parallax, pm_phi1_cosphi2,
pm_phi2 | phi1) and p(colour, magnitude | phi1). Each block is learnt once from
off-stream stars and then frozen: the mixture only needs every star's
background log-density.

- :class:`~streammix.config.FlowConfig` (the configuration's
  ``model.background.flow`` section) holds the architecture and training
  settings; the seed, the torch device and the CPU threads are arguments of
  the functions that train and evaluate.
- :class:`ConditionalFlow` is one neural spline flow p(x | phi1) for a
  D-dimensional block, built with zuko (default) or nflows. It standardises x
  and phi1 with constants learnt from the training data and includes the
  Jacobian of that standardisation, so its log-density is per unit of the
  input (e.g. per mas per (mas/yr)^2).
- :func:`fit_flow` trains one such flow (AdamW, held-out early stopping,
  deterministic seeds).
- :class:`BlockDensity` handles missing values: a star whose block is only
  partly observed is scored with the *marginal* density of the coordinates it
  has, learnt by a flow of its own on every training star that observes at
  least those coordinates. A star with none of the block's coordinates gets a
  log-density of 0 for that block.

Conventions: NaN marks a missing value; infinite values are an error. Inputs of
:class:`BlockDensity` are numpy arrays in the units of the data; outputs are
float64 numpy arrays. Training runs on the ``device`` it is given ("cpu" by
default, "cuda" where available), evaluation where the flows are.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import zuko
from pydantic import ValidationError
from torch import Tensor
from torch.overrides import TorchFunctionMode

from .settings import FlowConfig
from .errors import InputError
from .locus import ColourLocus
from .nsf import nsf_log_prob, supports
from .output import atomic_path
from .parallel import WorkerPool, map_spawned, torch_threads
from .training import EarlyStopping, Evaluation, TrainingState
from .training import train as run_training

__all__ = [
    "DEFAULT_THREADS",
    "MIN_STARS",
    "BlockDensity",
    "ConditionalFlow",
    "fit_flow",
    "from_unbounded",
    "growth_sizes",
    "read_state",
    "to_unbounded",
]

_BACKENDS = ("zuko", "nflows")
_TAIL_BOUND = 5.0  # splines act on [-5, 5] in standardised units; identity outside


DEFAULT_THREADS = 1
"""CPU threads torch may use while a flow trains or is evaluated, unless told
otherwise (set for the call and restored afterwards; 0 keeps torch's setting).
One is deliberate: these small networks gain little from more threads, and when
cores are shared with other processes multi-threaded training was measured 20
times slower."""

MIN_STARS = 50
"""Fewest training stars a flow may be fitted on (see :meth:`BlockDensity.fit`)."""

# Flow files written while the flows had settings of their own (not the config's FlowConfig) also hold
# these run settings; loading ignores them.
_RUN_SETTINGS = ("seed", "device", "min_stars", "threads")


class ConditionalFlow(torch.nn.Module):
    r"""A neural spline flow p(x | phi1) for a D-dimensional block of coordinates.

    The flow acts on standardised coordinates z = (x - x_loc) / x_scale with
    context (phi1 - phi1_loc) / phi1_scale; :meth:`log_prob` adds the Jacobian
    -sum(log x_scale), so it is a density in the units of x. The constants are
    buffers (saved with the state dict); :func:`fit_flow` sets them from the
    training data.

    Arguments:
        features: Number of coordinates D of the block.
        settings: Architecture (``backend``, ``transforms``, ``hidden``,
            ``layers``, ``bins``).
        x_loc: Offsets of x, shape (D,); default 0.
        x_scale: Scales of x, shape (D,), positive; default 1.
        phi1_loc: Offset of phi1.
        phi1_scale: Scale of phi1, positive.
        context_low, context_high: Range of E extra context columns (e.g.
            log errors) the flow is also conditioned on, shape (E,); values
            are clamped to it and mapped to [-1, 1]. Default: none (E = 0).

    Attributes:
        stopped_because: Why :func:`fit_flow` ended its training (empty for a
            flow made or loaded otherwise); not saved with the state dict.
        trained_on: How many training stars the weights :func:`fit_flow`
            kept learnt from (fewer than it had with ``grow_from``; 0 for a
            flow made or loaded otherwise); not saved with the state dict.
        seconds: How long :func:`fit_flow` took to train it (0 for a flow
            made or loaded otherwise); not saved with the state dict.

    Example:
        >>> flow = ConditionalFlow(2, FlowConfig(transforms=1, hidden=8), x_scale=[1.0, 10.0])
        >>> x, phi1 = torch.zeros(5, 2), torch.linspace(-1.0, 1.0, 5)
        >>> flow.log_prob(x, phi1).shape
        torch.Size([5])
        >>> flow.sample(phi1).shape
        torch.Size([5, 2])
    """

    x_loc: Tensor
    x_scale: Tensor
    phi1_loc: Tensor
    phi1_scale: Tensor
    context_low: Tensor
    context_high: Tensor

    def __init__(
        self,
        features: int,
        settings: FlowConfig = FlowConfig(),
        *,
        x_loc: Sequence[float] | np.ndarray | Tensor | None = None,
        x_scale: Sequence[float] | np.ndarray | Tensor | None = None,
        phi1_loc: float = 0.0,
        phi1_scale: float = 1.0,
        context_low: Sequence[float] | np.ndarray | Tensor = (),
        context_high: Sequence[float] | np.ndarray | Tensor = (),
    ):
        super().__init__()
        if isinstance(features, bool) or not isinstance(features, int) or features < 1:
            raise InputError(f"flow 'features': {features!r} is not a positive integer")
        self.features = features
        self.settings = settings
        self.stopped_because = ""
        self.trained_on = 0
        self.seconds = 0.0
        loc = torch.zeros(features) if x_loc is None else torch.as_tensor(x_loc).float()
        scale = torch.ones(features) if x_scale is None else torch.as_tensor(x_scale).float()
        if loc.shape != (features,) or scale.shape != (features,):
            raise InputError(f"flow 'x_loc'/'x_scale': shapes must be ({features},)")
        if not (torch.isfinite(loc).all() and torch.isfinite(scale).all() and (scale > 0).all()):
            raise InputError("flow 'x_loc'/'x_scale': must be finite, with positive scales")
        if not (math.isfinite(phi1_loc) and math.isfinite(phi1_scale) and phi1_scale > 0):
            raise InputError("flow 'phi1_loc'/'phi1_scale': must be finite, with a positive scale")
        self.register_buffer("x_loc", loc.clone())
        self.register_buffer("x_scale", scale.clone())
        self.register_buffer("phi1_loc", torch.tensor(float(phi1_loc)))
        self.register_buffer("phi1_scale", torch.tensor(float(phi1_scale)))
        low = torch.as_tensor(context_low, dtype=torch.float32).reshape(-1)
        high = torch.as_tensor(context_high, dtype=torch.float32).reshape(-1)
        if low.shape != high.shape or not (torch.isfinite(low).all() and torch.isfinite(high).all()):
            raise InputError("flow 'context_low'/'context_high': must be finite and of one length")
        self.register_buffer("context_low", low.clone())
        self.register_buffer("context_high", torch.maximum(high, low + 1e-6))
        self.extra_context = int(low.numel())
        self.net = _build_network(features, settings, 1 + self.extra_context)
        # A zuko NSF is evaluated by streammix.nsf, in training as in scoring.
        self._fast = settings.backend == "zuko" and supports(self.net)

    def _context(self, phi1: Tensor, extra: Tensor | None = None) -> Tensor:
        context = ((phi1 - self.phi1_loc) / self.phi1_scale).unsqueeze(-1)
        if not self.extra_context:
            return context
        if extra is None or extra.shape != (len(phi1), self.extra_context):
            raise InputError(f"flow: needs {self.extra_context} extra context columns per star")
        low, high = self.context_low, self.context_high
        scaled = 2 * (torch.minimum(torch.maximum(extra, low), high) - low) / (high - low) - 1
        return torch.cat([context, scaled], dim=-1)

    def log_prob(self, x: Tensor, phi1: Tensor, extra: Tensor | None = None) -> Tensor:
        r"""Log-density of x given phi1, in the units of x.

        Arguments:
            x: Coordinates, shape (N, D), all finite.
            phi1: Conditioning coordinate, shape (N,).
            extra: The extra context, shape (N, E), for a flow that has one.

        Returns:
            ln p(x | phi1), shape (N,).
        """
        z = (x - self.x_loc) / self.x_scale
        context = self._context(phi1, extra)
        if self._fast:
            return nsf_log_prob(self.net, z, context) - torch.log(self.x_scale).sum()
        with _ShortSoftmax():
            if self.settings.backend == "zuko":
                log_prob = self.net(context).log_prob(z)
            else:
                log_prob = self.net.log_prob(z, context=context)
        return log_prob - torch.log(self.x_scale).sum()

    def sample(self, phi1: Tensor, extra: Tensor | None = None) -> Tensor:
        r"""Draw one x per phi1 (uses torch's global random generator).

        Arguments:
            phi1: Conditioning coordinate, shape (N,).
            extra: The extra context, shape (N, E), for a flow that has one.

        Returns:
            Samples, shape (N, D), in the units of x.
        """
        context = self._context(phi1, extra)
        with _ShortSoftmax():
            if self.settings.backend == "zuko":
                z = self.net(context).sample()
            else:
                z = self.net.sample(1, context=context).squeeze(1)
        return z * self.x_scale + self.x_loc


def _build_network(features: int, settings: FlowConfig, context: int = 1) -> torch.nn.Module:
    """The standardised flow: zuko NSF or an nflows MPRQ autoregressive flow."""
    if settings.backend == "zuko":
        return zuko.flows.NSF(
            features,
            context=context,
            transforms=settings.transforms,
            bins=settings.bins,
            hidden_features=[settings.hidden] * settings.layers,
        )
    try:  # local import: nflows is an optional extra (streammix[nflows])
        from nflows.distributions.normal import StandardNormal
        from nflows.flows.base import Flow
        from nflows.transforms.autoregressive import (
            MaskedPiecewiseRationalQuadraticAutoregressiveTransform,
        )
        from nflows.transforms.base import CompositeTransform
        from nflows.transforms.permutations import ReversePermutation
    except ImportError:  # pragma: no cover - nflows is an optional dependency
        message = "flow setting 'backend': 'nflows' is not installed (pip install nflows)"
        raise InputError(message) from None
    transforms: list[torch.nn.Module] = []
    for i in range(settings.transforms):
        if i > 0 and features > 1:
            transforms.append(ReversePermutation(features))
        transforms.append(
            MaskedPiecewiseRationalQuadraticAutoregressiveTransform(
                features,
                settings.hidden,
                context_features=context,
                num_bins=settings.bins,
                tails="linear",
                tail_bound=_TAIL_BOUND,
                num_blocks=settings.layers,
                use_residual_blocks=False,
            )
        )
    return Flow(CompositeTransform(transforms), StandardNormal([features]))


class _ShortSoftmax(TorchFunctionMode):
    """Within this mode, a softmax over a short last dimension (the spline bins)
    is computed as exp / sum.

    Torch's CPU softmax over a last dimension of 8 elements was slower than
    exp / sum on the same tensor (torch 2.13, AVX-512) and was a large share
    of a flow's evaluation time (a one-off measurement when this mode was
    written, not recorded in benchmarks/RESULTS.md). The result agrees to
    float rounding (the largest shift of ln p was 2e-5 in float32). A zuko NSF's
    log-density now goes through :mod:`streammix.nsf`, which has no softmax;
    this mode serves sampling and the nflows backend.

    Example:
        >>> x = torch.randn(4, 3, 8)
        >>> with _ShortSoftmax():
        ...     y = torch.nn.functional.softmax(x, dim=-1)
        >>> bool(torch.allclose(y, torch.softmax(x, dim=-1), atol=1e-6))
        True
    """

    _SOFTMAX = (torch.nn.functional.softmax, torch.softmax, Tensor.softmax)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in self._SOFTMAX and kwargs.get("dtype") is None:
            x = args[0]
            dim = kwargs.get("dim", args[1] if len(args) > 1 else None)
            if isinstance(x, Tensor) and x.ndim and dim in (-1, x.ndim - 1) and x.shape[-1] <= 64:
                e = torch.exp(x - x.detach().amax(dim=-1, keepdim=True))
                return e / e.sum(dim=-1, keepdim=True)
        return func(*args, **kwargs)


@contextlib.contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch inside the block and restore the global random state afterwards."""
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def _weighted_moments(x: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = np.average(x, axis=0, weights=weights)
    std = np.sqrt(np.average((x - mean) ** 2, axis=0, weights=weights))
    return mean, std


def fit_flow(
    x: np.ndarray,
    phi1: np.ndarray,
    settings: FlowConfig = FlowConfig(),
    *,
    weights: np.ndarray | None = None,
    context: np.ndarray | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
    threads: int = DEFAULT_THREADS,
    progress: bool = False,
    label: str = "flow",
) -> ConditionalFlow:
    r"""Train a :class:`ConditionalFlow` p(x | phi1) on complete rows.

    The standardisation constants are the (weighted) mean and standard
    deviation of x and phi1. Training minimises the weighted mean negative
    log-density with AdamW; a random ``validation_fraction`` of the stars is
    held out, training stops after ``patience`` epochs without improvement of
    their loss (by more than ``stopping_k`` paired standard errors) and the
    best weights are restored. Everything random (weights,
    split, batches) is seeded with ``seed`` without changing torch's global
    random state.

    With ``settings.grow_from`` = m, the flow is trained as above on the
    first m training stars of the random order, then afresh (same initial
    weights and batch order) on 2m, 4m... up to all of them
    (:func:`growth_sizes`), while a growth lowers the held-out stars' mean
    loss by more than its paired standard error (the held-out stars are drawn
    once, as above); the lower of the last two is kept, and
    ``stopped_because`` and ``trained_on`` say how many stars it learnt from
    and why. A growth that reaches every star ends with the flow trained
    without ``grow_from``, having also trained the smaller ones. Each
    subsample's training has ``epochs`` passes over *it*, so a small
    subsample also gets fewer gradient steps.

    Arguments:
        x: Coordinates, shape (N, D), all finite.
        phi1: Conditioning coordinate, shape (N,), finite.
        settings: Architecture and training settings.
        weights: Optional non-negative per-star weights, shape (N,).
        context: Optional extra conditioning columns, shape (N, E), finite
            (e.g. log errors): the flow is then p(x | phi1, context).
        seed: Seed of the weight initialisation, the split and the batches.
        device: Torch device to train on, ``"cpu"`` or e.g. ``"cuda"``.
        threads: CPU threads torch may use meanwhile (see :data:`DEFAULT_THREADS`).
        progress: Show a rich progress bar with the losses.
        label: Name shown on the progress bar.

    Returns:
        The trained flow on ``device``, in evaluation mode.

    Example:
        >>> rng = np.random.default_rng(1)
        >>> phi1 = rng.uniform(-1, 1, 500)
        >>> x = (phi1 + rng.normal(0, 0.1, 500))[:, None]
        >>> flow = fit_flow(x, phi1, FlowConfig(transforms=1, hidden=8, epochs=2))
        >>> flow.features
        1
    """
    x = np.asarray(x, dtype=float)
    phi1 = np.asarray(phi1, dtype=float)
    if x.ndim != 2 or x.shape[0] < 2:
        raise InputError(f"{label}: values must have shape (N, D) with N >= 2, not {x.shape}")
    n, features = x.shape
    if phi1.shape != (n,):
        raise InputError(f"{label}: phi1 has shape {phi1.shape}, expected ({n},)")
    if not np.all(np.isfinite(x)):
        raise InputError(f"{label}: values contain non-finite entries")
    if not np.all(np.isfinite(phi1)):
        raise InputError(f"{label}: phi1 contains non-finite entries")
    extra = np.zeros((n, 0)) if context is None else np.asarray(context, dtype=float).reshape(n, -1)
    if not np.all(np.isfinite(extra)):
        raise InputError(f"{label}: the context contains non-finite entries")
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=float)
    if w.shape != (n,) or not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise InputError(f"{label}: weights must be {n} finite non-negative numbers, not all zero")
    device = _check_run(seed, device, threads)
    started = time.perf_counter()
    with torch_threads(threads):
        flow = _train(x, phi1, w, settings, seed, device, progress, label, extra)
    flow.seconds = time.perf_counter() - started
    return flow


def _check_run(seed: int, device: str | torch.device, threads: int) -> torch.device:
    """The torch device, after checking the seed, the device and the threads of a training run."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise InputError(f"flow 'seed': {seed!r} is not an integer")
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 0:
        raise InputError(f"flow 'threads': {threads!r} is not an integer >= 0")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError):
        raise InputError(f"flow 'device': {device!r} is not a torch device") from None


def _train(
    x: np.ndarray,
    phi1: np.ndarray,
    w: np.ndarray,
    settings: FlowConfig,
    seed: int,
    device: torch.device,
    progress: bool,
    label: str,
    extra: np.ndarray,
) -> ConditionalFlow:
    n, features = x.shape
    x_loc, x_scale = _weighted_moments(x, w)
    if np.any(x_scale <= 0):
        raise InputError(f"{label}: a coordinate has zero spread; it cannot be modelled by a flow")
    phi1_loc, phi1_scale = _weighted_moments(phi1[:, None], w)
    phi1_scale_value = float(phi1_scale[0]) if phi1_scale[0] > 0 else 1.0

    with _seeded(seed, device):
        flow = ConditionalFlow(
            features,
            settings,
            x_loc=x_loc,
            x_scale=x_scale,
            phi1_loc=float(phi1_loc[0]),
            phi1_scale=phi1_scale_value,
            context_low=extra.min(axis=0),
            context_high=extra.max(axis=0),
        ).to(device)
    generator = torch.Generator().manual_seed(seed)

    # Held-out split (a random order, so the first m training stars are a random subsample).
    order = torch.randperm(n, generator=generator)
    n_valid = int(round(settings.validation_fraction * n))
    if settings.validation_fraction > 0:
        n_valid = min(max(n_valid, 1), n - 1)
    valid_idx, train_idx = order[:n_valid], order[n_valid:]
    # every training run (each subsample's, with grow_from) starts from these weights and batches
    start_weights, start_random = copy.deepcopy(flow.state_dict()), generator.get_state()

    def to_tensor(array: np.ndarray) -> Tensor:
        return _float32_tensor(array, device)

    x_t, phi1_t, w_t, extra_t = to_tensor(x), to_tensor(phi1), to_tensor(w), to_tensor(extra)
    valid_idx_d = valid_idx.to(device)
    x_valid, phi1_valid, w_valid = x_t[valid_idx_d], phi1_t[valid_idx_d], w_t[valid_idx_d]
    extra_valid = extra_t[valid_idx_d]
    if n_valid > 0 and float(w_valid.sum()) <= 0:
        w_valid = torch.ones_like(w_valid)
    params = list(flow.parameters())
    max_steps = settings.max_steps if settings.max_steps is not None else math.inf
    steps = 0

    def held_out() -> Evaluation:
        """The held-out stars scored by the flow's current weights."""
        flow.eval()
        with torch.no_grad():
            log_prob = flow.log_prob(x_valid, phi1_valid, extra_valid)
            valid_loss = float(-(w_valid * log_prob).sum() / w_valid.sum())
            losses = -(w_valid * log_prob) / w_valid.mean()
        return Evaluation.of(losses, valid_loss if math.isfinite(valid_loss) else math.inf)

    def stage(rows: Tensor, stage_label: str) -> TrainingState:
        """Train the flow afresh (initial weights, first batch order) on the training stars ``rows``."""
        nonlocal steps
        flow.load_state_dict(start_weights)
        generator.set_state(start_random)
        steps = 0
        rows_d = rows.to(device)
        x_train, phi1_train, w_train = x_t[rows_d], phi1_t[rows_d], w_t[rows_d]
        extra_train = extra_t[rows_d]
        w_train_mean = w_train.mean().clamp_min(1e-30)
        # foreach: one operation per update for all the parameter tensors (the CPU default is one per tensor)
        optimizer = torch.optim.AdamW(
            flow.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay, foreach=True
        )
        # Halve the learning rate when the held-out loss stalls for a third of the patience.
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, factor=0.5, patience=max(settings.patience // 3, 1)
        )
        n_train = len(rows)
        # Exponential moving average of the weights (settings.averaging): the flow
        # that is validated, kept and returned is the average, not the last step.
        decay = settings.averaging
        average = [p.detach().clone() for p in params] if decay > 0 else None

        @contextlib.contextmanager
        def averaged() -> Iterator[None]:
            if average is None:
                yield
                return
            current = [p.detach().clone() for p in params]
            with torch.no_grad():
                for p, a in zip(params, average):
                    p.copy_(a)
            try:
                yield
            finally:
                with torch.no_grad():
                    for p, c in zip(params, current):
                        p.copy_(c)

        def epoch(state: TrainingState) -> float:
            nonlocal steps
            flow.train()
            permutation = torch.randperm(n_train, generator=generator).to(device)
            total = 0.0
            seen = 0
            for start in range(0, n_train, settings.batch_size):
                if steps >= max_steps:
                    break
                batch = permutation[start : start + settings.batch_size]
                log_prob = flow.log_prob(x_train[batch], phi1_train[batch], extra_train[batch])
                loss = -(w_train[batch] * log_prob).mean() / w_train_mean
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(flow.parameters(), 10.0, foreach=True)
                optimizer.step()
                if average is not None:
                    with torch.no_grad():
                        for a, p in zip(average, params):
                            a.lerp_(p, 1.0 - decay)
                total += float(loss.detach()) * len(batch)
                seen += len(batch)
                steps += 1
            return total / max(seen, 1)

        def evaluate() -> Evaluation:
            with averaged():
                evaluation = held_out()
            scheduler.step(evaluation.value)
            return evaluation

        def snapshot() -> dict[str, Tensor]:
            with averaged():
                return copy.deepcopy(flow.state_dict())

        state = run_training(
            epoch,
            evaluate if n_valid > 0 else None,
            snapshot,
            flow.load_state_dict,
            total=settings.epochs,
            stopping=EarlyStopping(settings.patience, "epochs", k=settings.stopping_k),
            budget=lambda: f"max steps ({settings.max_steps})" if steps >= max_steps else None,
            progress=stage_label if progress else None,
            transient=False,
        )
        if state.best is None and average is not None:
            with torch.no_grad():
                for p, a in zip(params, average):
                    p.copy_(a)
        return state

    n_train = len(train_idx)
    sizes = [n_train] if settings.grow_from is None or n_valid == 0 else growth_sizes(settings.grow_from, n_train)
    if len(sizes) == 1:
        flow.stopped_because = stage(train_idx, label).stopped_because
        flow.trained_on = n_train
    else:
        flow.stopped_because, flow.trained_on = _grow(stage, held_out, flow, train_idx, sizes, label)
    flow.eval()
    return flow


def growth_sizes(start: int, n: int) -> list[int]:
    """The subsample sizes a flow with ``grow_from = start`` may train on, out of ``n`` training stars.

    They double from ``start`` and end at ``n``; a last step of less than 1.5
    times is merged into the one before (so the last grows 1.5 to 3 times, and
    a field of fewer than 1.5 ``start`` stars trains on them all at once).

    Example:
        >>> growth_sizes(16384, 61667), growth_sizes(4096, 8392), growth_sizes(4096, 4159)
        ([16384, 32768, 61667], [4096, 8392], [4159])
    """
    sizes = [min(start, n)]
    while sizes[-1] < n:
        sizes.append(min(2 * sizes[-1], n))
    if len(sizes) > 1 and sizes[-1] < 1.5 * sizes[-2]:
        del sizes[-2]
    return sizes


def _grow(
    stage: Callable[[Tensor, str], TrainingState],
    held_out: Callable[[], Evaluation],
    flow: ConditionalFlow,
    train_idx: Tensor,
    sizes: list[int],
    label: str,
) -> tuple[str, int]:
    """Train ``flow`` afresh on the prefixes of ``train_idx`` (a random order) of
    the ``sizes`` (:func:`growth_sizes`) while a growth lowers the held-out
    stars' mean loss by more than its paired standard error; leave it with the
    weights of lower held-out loss of the last two. A growth that reaches every
    training star ends with the flow trained without ``grow_from``.

    Returns:
        Why training stopped, and how many training stars the kept weights learnt from.
    """
    n_train = len(train_idx)
    grown_from = f"grown from {sizes[0]:,}"
    last: tuple[dict[str, Tensor], Evaluation, int, str] | None = None
    for size in sizes:
        state = stage(train_idx[:size], f"{label} [{size:,} stars]")
        evaluation = held_out()
        if last is None:
            last = (copy.deepcopy(flow.state_dict()), evaluation, size, state.stopped_because)
            continue
        gain, noise = _paired_gain(last[1], evaluation)
        growth = f"growing {last[2]:,} to {size:,} lowered the held-out loss by {gain:.4f} nats per star"
        if gain > noise and size < n_train:
            last = (copy.deepcopy(flow.state_dict()), evaluation, size, state.stopped_because)
            continue
        if gain > noise:
            return (
                f"{state.stopped_because}; learnt from all {n_train:,} training stars ({grown_from}: {growth}, more "
                f"than its standard error {noise:.4f})",
                size,
            )
        kept_size, reason = (size, state.stopped_because) if evaluation.value < last[1].value else last[2:]
        if kept_size != size:
            flow.load_state_dict(last[0])
        of = "all" if kept_size == n_train else f"{kept_size:,} of"
        return (
            f"{reason}; learnt from {of} {n_train:,} training stars ({grown_from}): {growth}, not more than its "
            f"standard error {noise:.4f}",
            kept_size,
        )
    raise AssertionError("growth_sizes ends at every training star")  # pragma: no cover


def _paired_gain(before: Evaluation, after: Evaluation) -> tuple[float, float]:
    """How much lower ``after``'s held-out losses are than ``before``'s (the same stars),
    per star, and the paired standard error of that (:mod:`streammix.training`'s rule);
    ``(-inf, 0)`` when ``after`` is not finite."""
    if not math.isfinite(after.value) or not np.all(np.isfinite(after.losses)):
        return -math.inf, 0.0
    d = before.losses - after.losses
    return float(d.mean()), float(d.std(ddof=1) / math.sqrt(d.size)) if d.size > 1 else 0.0


def _patterns(mask: np.ndarray) -> np.ndarray:
    """Integer code of each row's pattern of observed coordinates (bit j: column j)."""
    codes = np.zeros(mask.shape[0], dtype=np.int64)
    for j in range(mask.shape[1]):
        codes[mask[:, j]] += 1 << j
    return codes


@dataclass
class BlockDensity:
    r"""Background density of one block of named coordinates given phi1, with missing values.

    There is one :class:`ConditionalFlow` per pattern of observed coordinates
    (e.g. the full block, and the proper motions alone for stars without
    parallax). The flow of a pattern models the *marginal* density of those
    coordinates; :meth:`fit` trains it on every star that observes at least
    them (assuming values are missing at random given phi1), so a rare pattern
    still learns from the stars that share its coordinates (from a random
    subsample of them the size of its own stars, or of
    ``settings.rare_pattern_stars`` where that is more). A star with no
    coordinate of the block observed gets log-density 0 (the block is absent
    from every mixture component for that star).

    With ``errors``, the flows are also conditioned on the log of the
    measurement errors of those coordinates, p(x | phi1, ln err): a faint
    star's parallax is then judged against the parallaxes of stars measured as
    poorly, not against those of the whole field (whose spread is mostly that
    of the bright, precise stars).

    With ``limits``, a coordinate the catalogue was cut on (a magnitude limit)
    is modelled on its interval only: the flow sees
    :func:`to_unbounded` of it, so no density leaks past the cut. A flow on the
    raw magnitude cannot end sharply at a cut; on the default mock it put 23 %
    too few stars in the last 0.1 mag before G = 20.5 (and 0.7 % beyond it),
    which is where most stream stars are.

    With ``locus`` (three band names: a magnitude and two others), the flows
    of patterns that observe all three see the coordinates of
    :class:`~streammix.locus.ColourLocus` (magnitude, colour, and the other
    colour's residual from the field's colour-colour relation in units of
    its spread), so they resolve the thin stellar locus; densities are
    returned in the raw magnitudes, Jacobian included.

    Arguments:
        names: Names of the block's coordinates, in column order.
        flows: Flow of each pattern, keyed by the tuple of its observed names
            (in the order of ``names``).
        settings: Settings the flows were built with.
        errors: The names whose log errors condition the flows (each flow uses
            those of its pattern).
        limits: ``{name: (low, high)}`` hard limits of some coordinates (None
            for an open side); values must lie within them.
        limit_scales: ``{name: scale}`` of each limited coordinate (see
            :func:`to_unbounded`; 1 where not given).
        locus: The colour-locus coordinates of patterns observing its three
            names, or None.
        phi2_context: Whether the flows are also conditioned on phi2 (the
            last extra context column); :meth:`log_prob` then needs each
            star's phi2.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> phi1 = rng.uniform(-10, 10, 400)
        >>> values = rng.normal([0.5, -3.0], [0.2, 1.0], (400, 2))
        >>> values[:100, 0] = np.nan  # parallax missing for a quarter of the stars
        >>> block = BlockDensity.fit(("parallax", "pm_phi2"), values, phi1,
        ...                          FlowConfig(transforms=1, hidden=8, epochs=2))
        >>> sorted(block.flows)
        [('parallax', 'pm_phi2'), ('pm_phi2',)]
        >>> block.log_prob(np.array([[0.5, -3.0], [np.nan, -3.0], [np.nan, np.nan]]),
        ...                np.zeros(3)).shape
        (3,)
    """

    #: The block's kind in a config (``model.background.blocks``) and in its saved state.
    kind = "flow"

    names: tuple[str, ...]
    flows: dict[tuple[str, ...], ConditionalFlow]
    settings: FlowConfig = field(default_factory=FlowConfig)
    errors: tuple[str, ...] = ()
    limits: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)
    limit_scales: dict[str, float] = field(default_factory=dict)
    locus: ColourLocus | None = None
    phi2_context: bool = False

    def __post_init__(self) -> None:
        self.names = tuple(str(name) for name in self.names)
        self.errors = tuple(str(name) for name in self.errors)
        self.limits = _check_limits(self.names, self.limits)
        self.limit_scales = {name: float(self.limit_scales.get(name, 1.0)) for name in self.limits}
        if not all(scale > 0 for scale in self.limit_scales.values()):
            raise InputError(f"block {self.names!r}: limit scales {self.limit_scales} must be > 0")
        if self.locus is not None:
            _check_locus(self.names, tuple(self.locus.names), self.limits)
        if any(name not in self.names for name in self.errors):
            raise InputError(f"block {self.names!r}: errors {self.errors!r} are not all among the names")
        if not self.names or len(set(self.names)) != len(self.names):
            raise InputError(f"block names {self.names!r}: must be non-empty and distinct")
        for pattern, flow in self.flows.items():
            if not pattern or any(name not in self.names for name in pattern):
                raise InputError(
                    f"block {self.names!r}: pattern {pattern!r} is not a subset of the names"
                )
            if flow.features != len(pattern):
                raise InputError(
                    f"block {self.names!r}: flow of pattern {pattern!r} has "
                    f"{flow.features} features"
                )

    # ------------------------------------------------------------------ fitting
    @classmethod
    def fit(
        cls,
        names: Sequence[str],
        values: np.ndarray,
        phi1: np.ndarray,
        settings: FlowConfig = FlowConfig(),
        *,
        weights: np.ndarray | None = None,
        patterns: Iterable[Sequence[str]] = (),
        marginal_without: Iterable[str] = (),
        errors: np.ndarray | None = None,
        limits: dict[str, tuple[float | None, float | None]] | None = None,
        locus: Sequence[str] | None = None,
        progress: bool = False,
        workers: int = 1,
        pool: WorkerPool | None = None,
        phi2: np.ndarray | None = None,
        seed: int = 0,
        device: str | torch.device = "cpu",
        threads: int = DEFAULT_THREADS,
        min_stars: int = MIN_STARS,
    ) -> BlockDensity:
        r"""Train one flow per pattern of observed coordinates present in ``values``.

        The flow of a pattern is trained on the columns of that pattern for all
        stars observing at least those columns. A flow that scores only the
        stars of its own pattern (not a marginal of ``marginal_without``, nor
        one of ``patterns``) is trained on a random subsample of them as large
        as the number of stars having exactly that pattern, or
        ``settings.rare_pattern_stars`` where that is more (but never fewer than
        ``min_stars``): its cost then grows with the stars it serves, not with
        the field. A pattern whose coordinates are
        observed together for fewer than ``min_stars`` stars cannot
        be learnt and raises :class:`InputError` (drop those values, or merge
        the block differently).

        Arguments:
            names: Names of the D coordinates of the block.
            values: Coordinates, shape (N, D), NaN where missing.
            phi1: Conditioning coordinate, shape (N,), finite.
            settings: Architecture and training settings.
            weights: Optional non-negative per-star weights (e.g. a probability
                of being background), shape (N,).
            patterns: Extra patterns (tuples of names) to fit even if absent
                from ``values``, to score other data later.
            marginal_without: Names (e.g. the bands) whose values may later be
                withheld: every observed pattern also gets the flow of its
                other coordinates, so the block's density without them is the
                true marginal.
            errors: Optional measurement errors, shape (N, D): the flows are
                conditioned on the log errors of every coordinate whose
                errors are positive for all the stars observing it (so a
                column of zeros, e.g. absent errors, is left out).
            limits: ``{name: (low, high)}`` hard limits of some coordinates
                (a catalogue's magnitude cut; None for an open side): their
                flows model the density inside the limits only. Every
                observed value must lie within them. Each limited
                coordinate's scale (:func:`to_unbounded`) is the standard
                deviation of its values.
            locus: Three band names ``(mag, blue, red)`` whose stellar locus
                the flows of patterns observing all three resolve through
                :class:`~streammix.locus.ColourLocus` (fitted here); None for
                raw coordinates.
            progress: Show a rich progress bar per flow (one bar for all with
                ``workers`` > 1).
            workers: Train up to this many patterns' flows at once, in spawned
                processes (CPU only; each flow's seed is fixed, so the flows
                are the same as one after the other). A block of six
                coordinates with its marginals trains five flows.
            pool: Worker processes started already, used in place of new
                ones with ``workers`` > 1 (:class:`~streammix.parallel.WorkerPool`).
            phi2: Each star's phi2, shape (N,), finite: the flows are then also
                conditioned on it (the last extra context column).
            seed: Seed of every flow's training (see :func:`fit_flow`), and of
                the subsamples of the flows only their own pattern's stars use.
            device: Torch device to train on, ``"cpu"`` or e.g. ``"cuda"``.
            threads: CPU threads torch may use per flow (see :data:`DEFAULT_THREADS`).
            min_stars: Fewest stars a pattern's flow may be trained on (at least 2).

        Returns:
            The fitted block, its flows in evaluation mode on ``device``.

        Example:
            >>> rng = np.random.default_rng(0)
            >>> phi1 = rng.uniform(0, 1, 300)
            >>> block = BlockDensity.fit(["g"], rng.normal(size=(300, 1)), phi1,
            ...                          FlowConfig(transforms=1, hidden=8, epochs=1))
            >>> list(block.flows)
            [('g',)]
        """
        names = tuple(str(name) for name in names)
        values, phi1 = _check_values(names, values, phi1)
        limits = _check_limits(names, limits or {})
        scales = {}
        for name in limits:
            column = values[:, names.index(name)]
            spread = float(np.std(column[np.isfinite(column)])) if np.isfinite(column).any() else 0.0
            scales[name] = spread if spread > 0 else 1.0
        fitted_locus = None
        if locus is not None:
            _check_locus(names, tuple(locus), limits)
            fitted_locus = ColourLocus.fit(tuple(locus), *(values[:, names.index(name)] for name in locus))
        values, located, _, _ = _flow_inputs(names, values, limits, scales, fitted_locus)
        mask = np.isfinite(values)
        exact = _patterns(mask)
        codes = set(np.unique(exact).tolist()) - {0}
        withheld = sum(1 << j for j, name in enumerate(names) if name in set(marginal_without))
        # the marginals scored for stars of other patterns, and the extra patterns, serve more stars than their own
        shared = {code & ~withheld for code in codes if code & withheld} - {0}
        for pattern in patterns:
            pattern = tuple(pattern)
            unknown = [name for name in pattern if name not in names]
            if unknown or not pattern:
                raise InputError(f"block {names!r}: pattern {pattern!r} names unknown coordinates")
            shared.add(sum(1 << names.index(name) for name in pattern))
        codes |= shared
        if not codes:
            raise InputError(f"block {names!r}: no star has any of these coordinates")
        if weights is not None:
            weights = np.asarray(weights, dtype=float)
            if weights.shape != phi1.shape:
                raise InputError(
                    f"block {names!r}: weights have shape {weights.shape}, expected {phi1.shape}"
                )

        error_names: tuple[str, ...] = ()
        if errors is not None:
            errors = np.asarray(errors, dtype=float)
            if errors.shape != values.shape:
                raise InputError(f"block {names!r}: errors have shape {errors.shape}, expected {values.shape}")
            with np.errstate(invalid="ignore"):
                error_names = tuple(
                    name for j, name in enumerate(names) if mask[:, j].any() and np.all(errors[mask[:, j], j] > 0)
                )
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise InputError(f"'workers': {workers!r} is not a positive integer")
        if isinstance(min_stars, bool) or not isinstance(min_stars, int) or min_stars < 2:
            raise InputError(f"'min_stars': {min_stars!r} is not an integer >= 2")
        device = _check_run(seed, device, threads)
        phi2 = _check_phi2(names, phi2, len(phi1))
        jobs: dict[tuple[str, ...], tuple[np.ndarray, np.ndarray, list[int]]] = {}
        cap = None if settings.rare_pattern_stars is None else max(settings.rare_pattern_stars, min_stars)
        # Full block first, then fewer coordinates.
        for code in sorted(codes, key=lambda c: (-bin(c).count("1"), c)):
            columns = [j for j in range(len(names)) if code >> j & 1]
            pattern = tuple(names[j] for j in columns)
            rows = np.all(mask[:, columns], axis=1)
            count = int(rows.sum())
            if count < min_stars:
                raise InputError(
                    f"block {names!r}: coordinates {pattern!r} are observed together for only "
                    f"{count} stars (min_stars = {min_stars})"
                )
            # a flow only its own pattern's stars use learns from as many stars as it scores, at least cap
            size = None if cap is None or code in shared else max(cap, int(np.sum(exact == code)))
            if size is not None and size < count:
                # a random subsample, the same for the same seed (numpy's seeds are non-negative)
                keep = np.random.default_rng([seed % 2**64, code]).choice(np.flatnonzero(rows), size, replace=False)
                rows = np.zeros_like(rows)
                rows[keep] = True
            source = located if _uses_locus(fitted_locus, pattern) else values
            jobs[pattern] = (source, rows, columns)

        def job(pattern: tuple[str, ...]) -> dict[str, Any]:  # a flow's training data, made when needed
            source, rows, columns = jobs[pattern]
            return dict(
                x=source[np.ix_(rows, columns)],
                phi1=phi1[rows],
                settings=settings,
                seed=seed,
                device=device,
                threads=threads,
                weights=None if weights is None else weights[rows],
                context=_context(errors, rows, columns, names, error_names, phi2),
                label=f"p({', '.join(pattern)} | phi1{', phi2' if phi2 is not None else ''})",
            )

        workers = min(workers, len(jobs)) if device.type == "cpu" else 1
        if workers == 1:
            flows = {pattern: fit_flow(**job(pattern), progress=progress) for pattern in jobs}
        else:
            fitted = map_spawned(
                fit_flow, [job(pattern) for pattern in jobs], workers, label="background flows", progress=progress, pool=pool
            )
            flows = dict(zip(jobs, fitted))
        return cls(names, flows, settings, error_names, limits, scales, fitted_locus, phi2 is not None)

    # --------------------------------------------------------------- evaluation
    def log_prob(
        self,
        values: np.ndarray,
        phi1: np.ndarray,
        *,
        errors: np.ndarray | None = None,
        chunk_size: int | None = None,
        threads: int | None = None,
        phi2: np.ndarray | None = None,
    ) -> np.ndarray:
        r"""Log-density of each star's observed coordinates of the block given phi1.

        Arguments:
            values: Coordinates, shape (N, D) in the order of ``names``, NaN
                where missing.
            phi1: Conditioning coordinate, shape (N,), finite.
            errors: Measurement errors, shape (N, D); needed if the block was
                fitted with errors.
            phi2: Each star's phi2 (deg), shape (N,); needed if the block was
                fitted with ``phi2`` (its flows are conditioned on it).
            chunk_size: Stars evaluated at once (bounds the memory). Default
                8,192 per thread: with one thread 8,192 was the fastest of
                2,048 to 262,144 measured (the tensors stay in cache); with two,
                16,384-32,768 scored 1.9 times as fast as one thread.
            threads: CPU threads for the evaluation; default :data:`DEFAULT_THREADS`.

        Returns:
            float64 array (N,): ln p(observed coordinates | phi1), in the units
            of the data; 0 for stars with none observed.

        Example:
            >>> rng = np.random.default_rng(0)
            >>> block = BlockDensity.fit(["x"], rng.normal(size=(200, 1)), rng.uniform(size=200),
            ...                          FlowConfig(transforms=1, hidden=8, epochs=1))
            >>> block.log_prob(np.array([[np.nan]]), np.array([0.5]))
            array([0.])
        """
        values, phi1 = _check_values(self.names, values, phi1)
        threads = DEFAULT_THREADS if threads is None else threads
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 0:
            raise InputError(f"'threads': {threads!r} is not an integer >= 0")
        if chunk_size is None:
            chunk_size = 8192 * max(1, threads or torch.get_num_threads())
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise InputError(f"'chunk_size': {chunk_size!r} is not a positive integer")
        values, located, log_jacobian, locus_jacobian = _flow_inputs(
            self.names, values, self.limits, self.limit_scales, self.locus
        )
        mask = np.isfinite(values)
        if self.errors:
            if errors is None or np.shape(errors) != values.shape:
                raise InputError(
                    f"block {self.names!r}: its flows are conditioned on the errors of {self.errors!r}; "
                    f"give errors of shape {values.shape}"
                )
            errors = np.asarray(errors, dtype=float)
        phi2 = _check_phi2(self.names, phi2, len(phi1), needed=self.phi2_context)
        codes = _patterns(mask)
        out = np.zeros(len(phi1), dtype=np.float64)
        groups = []
        counts = np.bincount(codes)
        for code in np.flatnonzero(counts):
            if code == 0:
                continue
            columns = [j for j in range(len(self.names)) if code >> j & 1]
            pattern = tuple(self.names[j] for j in columns)
            if pattern not in self.flows:
                raise InputError(
                    f"block {self.names!r}: no flow for stars observing only {pattern!r}; "
                    "refit with this pattern (BlockDensity.fit(..., patterns=...))"
                )
            # every star in one pattern (the usual case): no copies by row
            rows = slice(None) if counts[code] == len(codes) else np.flatnonzero(codes == code)
            if _uses_locus(self.locus, pattern):
                groups.append((self.flows[pattern], columns, rows, located))
                log_jacobian[rows] += locus_jacobian[rows]
            else:
                groups.append((self.flows[pattern], columns, rows, values))
        with torch_threads(threads):
            for flow, columns, rows, source in groups:
                extra = _context(errors, rows, columns, self.names, self.errors, phi2)
                out[rows] = _evaluate(flow, _take(source, rows, columns), phi1[rows], chunk_size, extra)
        return out + log_jacobian

    def sample(
        self,
        phi1: np.ndarray,
        *,
        pattern: Sequence[str] | None = None,
        seed: int | None = None,
        errors: np.ndarray | None = None,
        phi2: np.ndarray | None = None,
    ) -> np.ndarray:
        r"""Draw one star per phi1 from the flow of a pattern (default: the full block).

        Arguments:
            phi1: Conditioning coordinate, shape (N,).
            pattern: Names to sample (a fitted pattern); default all names.
            seed: Seed for reproducible draws; ``None`` uses torch's global
                generator.
            errors: Measurement errors of the pattern's coordinates, shape
                (N, len(pattern)), for a block fitted with errors.
            phi2: phi2 (deg) of each draw, shape (N,), for a block fitted with ``phi2``.

        Returns:
            float64 array (N, len(pattern)).

        Example:
            >>> rng = np.random.default_rng(0)
            >>> block = BlockDensity.fit(["x", "y"], rng.normal(size=(200, 2)),
            ...                          rng.uniform(size=200),
            ...                          FlowConfig(transforms=1, hidden=8, epochs=1))
            >>> block.sample(np.zeros(4), seed=1).shape
            (4, 2)
        """
        pattern = self.names if pattern is None else tuple(pattern)
        flow = self.flows.get(pattern)
        if flow is None:
            raise InputError(f"block {self.names!r}: no flow for pattern {pattern!r}")
        phi1 = np.asarray(phi1, dtype=float)
        if phi1.ndim != 1 or not np.all(np.isfinite(phi1)):
            raise InputError("phi1: must be a finite 1-D array")
        device = flow.x_loc.device
        phi1_t = _float32_tensor(phi1, device)
        extra = None
        phi2 = _check_phi2(self.names, phi2, len(phi1), needed=self.phi2_context)
        if flow.extra_context:
            conditioned = [name for name in pattern if name in self.errors]
            if conditioned and (errors is None or np.shape(errors) != (len(phi1), len(pattern))):
                raise InputError(f"block {self.names!r}: sampling needs errors of shape ({len(phi1)}, {len(pattern)})")
            rows = np.arange(len(phi1))
            given = None if errors is None else np.asarray(errors, dtype=float)
            extra = _context(given, rows, list(range(len(pattern))), pattern, self.errors, phi2)
            extra = _float32_tensor(extra, device)
        with torch.no_grad(), torch_threads(DEFAULT_THREADS):
            if seed is None:
                draws = flow.sample(phi1_t, extra)
            else:
                with _seeded(seed, device):
                    draws = flow.sample(phi1_t, extra)
        draws = draws.cpu().numpy().astype(np.float64)
        for j, name in enumerate(pattern):
            if name in self.limits:
                draws[:, j] = from_unbounded(draws[:, j], *self.limits[name], self.limit_scales[name])
        if _uses_locus(self.locus, pattern):
            j_mag, j_blue, j_red = (pattern.index(name) for name in self.locus.names)
            _, draws[:, j_blue], draws[:, j_red] = self.locus.inverse(draws[:, j_mag], draws[:, j_blue], draws[:, j_red])
        return draws

    # -------------------------------------------------------------- persistence
    def state_dict(self) -> dict[str, Any]:
        r"""Plain-data description of the block: names, settings and each flow's tensors.

        Example:
            >>> rng = np.random.default_rng(0)
            >>> block = BlockDensity.fit(["x"], rng.normal(size=(100, 1)), rng.uniform(size=100),
            ...                          FlowConfig(transforms=1, hidden=8, epochs=1))
            >>> sorted(block.state_dict())
            ['errors', 'flows', 'kind', 'limit_scales', 'limits', 'locus', 'names', 'phi2_context', 'settings']
        """
        return {
            "kind": self.kind,
            "names": list(self.names),
            "errors": list(self.errors),
            "limits": {name: list(bounds) for name, bounds in self.limits.items()},
            "limit_scales": dict(self.limit_scales),
            "locus": None if self.locus is None else self.locus.state_dict(),
            "phi2_context": bool(self.phi2_context),
            "settings": self.settings.model_dump(),
            "flows": [
                {
                    "pattern": list(pattern),
                    "state": {k: v.detach().cpu() for k, v in flow.state_dict().items()},
                }
                for pattern, flow in self.flows.items()
            ],
        }

    def tensors(self) -> Iterator[Tensor]:
        """Every weight of the block's flows, in a fixed order (for fingerprints)."""
        for flow in self.flows.values():
            yield from flow.state_dict().values()

    @classmethod
    def from_state_dict(cls, state: dict[str, Any], *, device: str | torch.device = "cpu") -> BlockDensity:
        r"""Rebuild a block from :meth:`state_dict`.

        Arguments:
            state: Output of :meth:`state_dict`.
            device: Torch device to load onto.

        Example:
            >>> rng = np.random.default_rng(0)
            >>> block = BlockDensity.fit(["x"], rng.normal(size=(100, 1)), rng.uniform(size=100),
            ...                          FlowConfig(transforms=1, hidden=8, epochs=1))
            >>> copy = BlockDensity.from_state_dict(block.state_dict())
            >>> x, phi1 = np.array([[0.3]]), np.array([0.5])
            >>> bool(copy.log_prob(x, phi1)[0] == block.log_prob(x, phi1)[0])
            True
        """
        try:
            names = tuple(state["names"])
            # files written before the settings were a FlowConfig also hold the run's
            settings_dict = {k: v for k, v in dict(state["settings"]).items() if k not in _RUN_SETTINGS}
            try:
                settings = FlowConfig(**settings_dict)
            except ValidationError as error:
                first = error.errors()[0]
                key = ".".join(str(k) for k in first["loc"])
                raise InputError(f"flow state: settings.{key}: {first['msg']}") from None
            device = torch.device(device)
            flows: dict[tuple[str, ...], ConditionalFlow] = {}
            for entry in state["flows"]:
                pattern = tuple(entry["pattern"])
                weights = dict(entry["state"])
                empty = torch.zeros(0)  # files written before flows took extra context
                low, high = weights.setdefault("context_low", empty), weights.setdefault("context_high", empty)
                flow = ConditionalFlow(len(pattern), settings, context_low=low, context_high=high)
                flow.load_state_dict(weights)
                flows[pattern] = flow.to(device).eval()
        except (KeyError, TypeError, RuntimeError) as error:
            message = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise InputError(f"flow state: malformed ({message})") from None
        limits = {name: tuple(bounds) for name, bounds in dict(state.get("limits", {})).items()}
        if limits and "limit_scales" not in state:
            raise InputError(
                "flow state: limits without their scales (written by a streammix whose limit transform "
                "was logarithmic); refit the model"
            )
        locus = state.get("locus")
        return cls(
            names, flows, settings, tuple(state.get("errors", ())), limits, dict(state.get("limit_scales", {})),
            None if locus is None else ColourLocus.from_state_dict(locus),
            bool(state.get("phi2_context", False)),
        )

    def save(self, path: str | os.PathLike) -> Path:
        r"""Write the block to ``path`` with :func:`torch.save` (plain data, no pickled classes).

        Arguments:
            path: Destination file (conventionally ``.pt``); replaced if it exists.

        Returns:
            The path written.
        """
        path = Path(path)
        with atomic_path(path, overwrite=True) as tmp:
            torch.save(self.state_dict(), tmp)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, *, device: str | torch.device = "cpu") -> BlockDensity:
        r"""Read a block written by :meth:`save` (``weights_only`` loading: no code runs).

        Arguments:
            path: File written by :meth:`save`.
            device: Torch device to load onto.

        Example:
            >>> import tempfile, pathlib
            >>> rng = np.random.default_rng(0)
            >>> block = BlockDensity.fit(["x"], rng.normal(size=(100, 1)), rng.uniform(size=100),
            ...                          FlowConfig(transforms=1, hidden=8, epochs=1))
            >>> path = block.save(pathlib.Path(tempfile.mkdtemp()) / "background.pt")
            >>> BlockDensity.load(path).names
            ('x',)
        """
        return cls.from_state_dict(read_state(path), device=device)


def read_state(path: str | os.PathLike) -> dict[str, Any]:
    """The state a background block's :meth:`~BlockDensity.save` wrote (``weights_only``: no code runs).

    Arguments:
        path: The file.

    Example:
        >>> read_state("no/such/block.pt")
        Traceback (most recent call last):
        ...
        streammix.errors.InputError: flow file 'no/such/block.pt': does not exist
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"flow file '{path}': does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unreadable file is bad input
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise InputError(f"flow file '{path}': cannot be read ({message})") from None
    if not isinstance(state, dict):
        raise InputError(f"flow file '{path}': is not a saved background block")
    return state


def _check_values(
    names: tuple[str, ...], values: np.ndarray, phi1: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    values = np.asarray(values, dtype=float)
    phi1 = np.asarray(phi1, dtype=float)
    if values.ndim == 1 and len(names) == 1:
        values = values[:, None]
    if values.ndim != 2 or values.shape[1] != len(names):
        raise InputError(
            f"block {names!r}: values have shape {values.shape}, expected (N, {len(names)})"
        )
    if phi1.shape != (values.shape[0],):
        raise InputError(
            f"phi1: shape {phi1.shape} does not match {values.shape[0]} rows of values"
        )
    if not np.all(np.isfinite(phi1)):
        raise InputError(f"phi1: {int(np.sum(~np.isfinite(phi1)))} non-finite values")
    infinite = np.isinf(values)
    if np.any(infinite):
        column = names[int(np.flatnonzero(infinite.any(axis=0))[0])]
        raise InputError(f"column {column!r}: infinite values (use NaN for missing)")
    return values, phi1


LIMIT_PAD = 1e-3
"""Margin (in the coordinate's units) by which the open interval of a limited
coordinate extends past its limits, so that a value exactly at a limit (a cut
written as ``<=``, or rounded) stays finite."""


def _tail(d: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """``w(d) = sqrt(2 ln(1 + s/d))`` and ``-dw/dd`` for distances ``d > 0`` to a limit."""
    w = np.sqrt(2.0 * np.log1p(scale / d))
    return w, scale / (w * d * (d + scale))


def to_unbounded(
    x: np.ndarray, low: float | None, high: float | None, scale: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    r"""Map values inside ``[low, high]`` smoothly and monotonically onto the real line.

    With :math:`d_a = x - a` and :math:`d_b = b - x` the distances to the
    padded limits (:math:`a = \mathrm{low} - \epsilon`, :math:`b = \mathrm{high}
    + \epsilon`, ``LIMIT_PAD``), :math:`s` the ``scale`` and
    :math:`w(d) = \sqrt{2 \ln(1 + s/d)}`:

    .. math::
        y = \frac{d_a}{s} - w(d_a)\ \text{(low only)},\quad
        y = w(d_b) - \frac{d_b}{s}\ \text{(high only)},\quad
        y = \frac{x - (a+b)/2}{s} - w(d_a) + w(d_b)\ \text{(both)}.

    Far from a limit y is linear in x; near it :math:`d \approx s\,e^{-y^2/2}`,
    so a density that stays finite up to the limit (stars piling up at a
    magnitude cut) becomes a *Gaussian* tail in y, which a flow with a
    Gaussian base represents. A logarithmic map would make it an exponential
    tail far outside the flow's splines, where the flow's own tail is Gaussian:
    on the default mock that left the flow's density in the last 0.05 mag
    before the cut up to e^3.7 too low at the stream's colours.

    A density of y becomes a density of x on the interval through the
    Jacobian, which is returned: :math:`\ln p(x) = \ln p(y) + \ln|dy/dx|`.

    Arguments:
        x: Values (NaN passes through).
        low, high: The limits; None for an open side.
        scale: Distance from a limit (in x's units) within which the Gaussian
            tail takes over; :class:`BlockDensity` uses the training values'
            standard deviation.

    Returns:
        ``(y, log |dy/dx|)``, each shaped like ``x`` (NaN where x is).

    Example:
        >>> y, log_jacobian = to_unbounded(np.array([19.0, 20.5]), None, 20.5)
        >>> y.round(3), log_jacobian.round(3)
        (array([-0.49 ,  3.716]), array([0.234, 5.598]))
        >>> bool(np.allclose(from_unbounded(y, None, 20.5), [19.0, 20.5]))
        True

        Every kind of interval: the inverse, and the Jacobian against a numerical derivative.

        >>> x, h = np.array([0.2, 0.5, 0.9, 0.9999]), 1e-8
        >>> kinds = [(0.0, 1.0), (0.0, None), (None, 1.0)]
        >>> all(np.allclose(from_unbounded(to_unbounded(x, lo, hi, 0.3)[0], lo, hi, 0.3), x) for lo, hi in kinds)
        True
        >>> slope = lambda lo, hi: (to_unbounded(x + h, lo, hi, 0.3)[0] - to_unbounded(x - h, lo, hi, 0.3)[0]) / (2 * h)
        >>> all(np.allclose(np.log(slope(lo, hi)), to_unbounded(x, lo, hi, 0.3)[1], atol=1e-5) for lo, hi in kinds)
        True
    """
    x = np.asarray(x, dtype=float)
    if not scale > 0:
        raise InputError(f"limit scale: {scale} is not > 0")
    a = None if low is None else low - LIMIT_PAD
    b = None if high is None else high + LIMIT_PAD
    if a is None and b is None:
        return x.copy(), np.zeros_like(x)
    with np.errstate(invalid="ignore", divide="ignore"):
        if a is not None and b is not None:
            w_a, dw_a = _tail(x - a, scale)
            w_b, dw_b = _tail(b - x, scale)
            y = (x - 0.5 * (a + b)) / scale - w_a + w_b
            slope = 1.0 / scale + dw_a + dw_b
        elif a is not None:
            w_a, slope = _tail(x - a, scale)
            y = (x - a) / scale - w_a
            slope = slope + 1.0 / scale
        else:
            w_b, slope = _tail(b - x, scale)
            y = w_b - (b - x) / scale
            slope = slope + 1.0 / scale
    return y, np.log(slope)


def from_unbounded(y: np.ndarray, low: float | None, high: float | None, scale: float = 1.0) -> np.ndarray:
    """The inverse of :func:`to_unbounded` (by bisection): values inside the limits (padded by ``LIMIT_PAD``).

    Arguments:
        y: Values on the real line.
        low, high: The limits; None for an open side.
        scale: The scale given to :func:`to_unbounded`.

    Example:
        >>> from_unbounded(np.array([0.0]), 0.0, 1.0)
        array([0.5])
    """
    y = np.asarray(y, dtype=float)
    a = None if low is None else low - LIMIT_PAD
    b = None if high is None else high + LIMIT_PAD
    if a is None and b is None:
        return y.copy()
    # bisect on v, a log-distance to the limit(s) that resolves values at the limits to float precision
    if a is not None and b is not None:
        to_x = lambda v: a + (b - a) * 0.5 * (1.0 + np.tanh(0.5 * v))  # noqa: E731
        v_lo, v_hi = np.full_like(y, -745.0), np.full_like(y, 745.0)
    else:
        sign = 1.0 if a is not None else -1.0
        to_x = (lambda v: a + np.exp(v)) if a is not None else (lambda v: b - np.exp(-v))  # noqa: E731
        top = np.log(scale * (np.maximum(sign * y, 0.0) + 2.0))
        v_lo, v_hi = (np.full_like(y, -690.0), top) if a is not None else (-top, np.full_like(y, 690.0))
    finite = np.isfinite(y)
    for _ in range(120):
        mid = 0.5 * (v_lo + v_hi)
        with np.errstate(invalid="ignore", over="ignore"):
            below = to_unbounded(to_x(mid), low, high, scale)[0] < y
        v_lo, v_hi = np.where(below, mid, v_lo), np.where(below, v_hi, mid)
    return np.where(finite, to_x(0.5 * (v_lo + v_hi)), np.nan)


def _check_limits(names: tuple[str, ...], limits: dict) -> dict[str, tuple[float | None, float | None]]:
    checked: dict[str, tuple[float | None, float | None]] = {}
    for name, bounds in dict(limits).items():
        if name not in names:
            raise InputError(f"block {names!r}: limits name {name!r}, which is not among its coordinates")
        try:
            low, high = (None if v is None else float(v) for v in bounds)
        except (TypeError, ValueError):
            raise InputError(f"limits of {name!r}: {bounds!r} is not a (low, high) pair") from None
        low = None if low is not None and low == -math.inf else low
        high = None if high is not None and high == math.inf else high
        if any(v is not None and not math.isfinite(v) for v in (low, high)):
            raise InputError(f"limits of {name!r}: {bounds!r} must be numbers (None or an infinity for an open side)")
        if low is not None and high is not None and not low < high:
            raise InputError(f"limits of {name!r}: low {low:g} must be below high {high:g}")
        if low is not None or high is not None:
            checked[str(name)] = (low, high)
    return checked


def _check_locus(names: tuple[str, ...], locus: tuple[str, ...], limits: dict) -> None:
    if len(locus) != 3 or len(set(locus)) != 3:
        raise InputError(f"locus {list(locus)}: must be three distinct names (magnitude, blue, red)")
    outside = [name for name in locus if name not in names]
    if outside:
        raise InputError(f"locus {list(locus)}: {outside} not among the block's coordinates {list(names)}")
    limited = [name for name in locus[1:] if name in limits]
    if limited:
        raise InputError(f"locus {list(locus)}: its colour bands {limited} cannot have limits (only its magnitude)")


def _uses_locus(locus: ColourLocus | None, pattern: Sequence[str]) -> bool:
    return locus is not None and set(locus.names) <= set(pattern)


def _flow_inputs(
    names: tuple[str, ...],
    values: np.ndarray,
    limits: dict[str, tuple[float | None, float | None]],
    scales: dict[str, float],
    locus: ColourLocus | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """What the flows see: ``(unbounded, located, log_jacobian, locus_jacobian)``.

    ``unbounded`` has the limited coordinates through :func:`to_unbounded`
    (``log_jacobian`` its per-row log-Jacobian); ``located`` is the same with
    the locus's blue and red columns replaced by colour and residual where all
    three bands are observed (``locus_jacobian`` the per-row log-Jacobian of
    that, 0 elsewhere), for the patterns that observe the locus. The locus acts
    on the raw magnitudes; its colour bands cannot be limited, and its
    magnitude keeps its unbounded value."""
    unbounded, log_jacobian = _unbound(names, values, limits, scales)
    locus_jacobian = np.zeros(len(values))
    if locus is None:
        return unbounded, unbounded, log_jacobian, locus_jacobian
    j_mag, j_blue, j_red = (names.index(name) for name in locus.names)
    full = np.isfinite(values[:, [j_mag, j_blue, j_red]]).all(axis=1)
    located = unbounded.copy()
    _, colour, residual, locus_jacobian[full] = locus.transform(values[full, j_mag], values[full, j_blue], values[full, j_red])
    located[full, j_blue], located[full, j_red] = colour, residual
    return unbounded, located, log_jacobian, locus_jacobian


def _unbound(
    names: tuple[str, ...],
    values: np.ndarray,
    limits: dict[str, tuple[float | None, float | None]],
    scales: dict[str, float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Values with limited coordinates mapped by :func:`to_unbounded`, and the
    per-row log-Jacobian summed over the observed ones; a value outside its
    limits is an error naming the column."""
    if not limits:
        return values, np.zeros(len(values))
    values = values.copy()
    log_jacobian = np.zeros(len(values))
    for j, name in enumerate(names):
        if name not in limits:
            continue
        low, high = limits[name]
        column = values[:, j]
        with np.errstate(invalid="ignore"):
            outside = ((column < low) if low is not None else False) | ((column > high) if high is not None else False)
        if np.any(outside):
            bad = column[outside]
            raise InputError(
                f"column {name!r}: {int(outside.sum())} values lie outside the limits ({low}, {high}) of the "
                f"background flows (e.g. {bad[0]:g}); cut the catalogue to them or widen the limits"
            )
        y, jac = to_unbounded(column, low, high, (scales or {}).get(name, 1.0))
        values[:, j] = y
        log_jacobian += np.where(np.isfinite(jac), jac, 0.0)
    return values, log_jacobian


def _take(array: np.ndarray, rows: np.ndarray | slice, columns: Sequence[int]) -> np.ndarray:
    """``array[rows][:, columns]``, without a copy where that takes every row and column."""
    if isinstance(rows, slice):
        return array if list(columns) == list(range(array.shape[1])) else array[:, columns]
    return array[np.ix_(rows, columns)]


def _log_errors(
    errors: np.ndarray | None, rows: np.ndarray, columns: Sequence[int], names: Sequence[str], error_names: Sequence[str]
) -> np.ndarray | None:
    """The log errors of the ``error_names`` among ``columns`` for ``rows``
    (None when there are none); errors of 0 or below are floored at 1e-6."""
    chosen = [j for j in columns if names[j] in error_names]
    if errors is None or not chosen:
        return None
    return np.log(np.maximum(_take(errors, rows, chosen), 1e-6))


def _context(
    errors: np.ndarray | None,
    rows: np.ndarray,
    columns: Sequence[int],
    names: Sequence[str],
    error_names: Sequence[str],
    phi2: np.ndarray | None,
) -> np.ndarray | None:
    """The extra context of a flow for ``rows``: the log errors (:func:`_log_errors`)
    then, for a block conditioned on it, phi2; None when there is neither."""
    log_errors = _log_errors(errors, rows, columns, names, error_names)
    if phi2 is None:
        return log_errors
    column = phi2[rows].reshape(-1, 1)
    return column if log_errors is None else np.concatenate([log_errors, column], axis=1)


def _check_phi2(names: Sequence[str], phi2: np.ndarray | None, n: int, needed: bool | None = None) -> np.ndarray | None:
    """``phi2`` as a finite float array of ``n`` values, or None. ``needed``:
    whether the block was fitted with it (None while fitting: optional)."""
    if needed is False:
        return None
    if phi2 is None:
        if needed:
            raise InputError(f"block {tuple(names)!r}: its flows are conditioned on phi2; give each star's phi2")
        return None
    phi2 = np.asarray(phi2, dtype=float).reshape(-1)
    if phi2.shape != (n,) or not np.all(np.isfinite(phi2)):
        raise InputError(f"block {tuple(names)!r}: phi2 must be finite, one value per star ({n})")
    return phi2


def _float32_tensor(array: np.ndarray, device: torch.device | str) -> Tensor:
    """``array`` as a float32 tensor on ``device``; a read-only array (a memory-mapped
    or astropy column) is copied, so torch never warns about non-writable memory."""
    array = np.asarray(array, dtype=np.float32)
    if not array.flags.writeable:
        array = array.copy()
    return torch.from_numpy(array).to(device)


def _evaluate(
    flow: ConditionalFlow, x: np.ndarray, phi1: np.ndarray, chunk_size: int, extra: np.ndarray | None = None
) -> np.ndarray:
    device = flow.x_loc.device
    out = np.empty(len(phi1), dtype=np.float64)
    with torch.no_grad():
        for start in range(0, len(phi1), chunk_size):
            stop = start + chunk_size
            x_t = _float32_tensor(x[start:stop], device)
            phi1_t = _float32_tensor(phi1[start:stop], device)
            extra_t = None if extra is None else _float32_tensor(extra[start:stop], device)
            out[start:stop] = flow.log_prob(x_t, phi1_t, extra_t).cpu().numpy()
    return out
