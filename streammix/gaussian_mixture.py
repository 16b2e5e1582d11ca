r"""``kind: gaussian_mixture``: a background block that is a conditional Gaussian mixture.

.. math::

    p(x \mid \phi_1) = \sum_{k=1}^{K} w_k(\phi_1)\,
    \mathcal{N}\big(x \mid \mu_k(\phi_1),\ \mathrm{diag}(\sigma_k^2(\phi_1) + \epsilon^2)\big)

with the weights, means and widths from one small network of phi1 (and phi2,
with ``model.background.phi2_context``). Against a flow it is small and fast
to train, and its marginals are exact: a star missing some of the block's
coordinates is scored with the same mixture over the coordinates it has, so
one model serves every pattern of missing values (a flow block trains one
flow per pattern). With ``model.background.error_context`` the stars'
measurement errors :math:`\epsilon` are added to the widths (a deconvolved
density) instead of conditioning on them. It cannot end sharply at a hard
limit, so a block with limits (``model.background.limits``, or the cuts of
``data.selection``) is refused when the config is read.

Example:
    >>> rng = np.random.default_rng(0)
    >>> phi1 = rng.uniform(-10, 10, 2000)
    >>> values = np.stack([rng.normal(0.1 * phi1, 1.0), rng.normal(0.0, 0.5, 2000)], axis=1)
    >>> values[:500, 1] = np.nan
    >>> block = GaussianMixtureBlockConfig(coordinates=["x", "y"], components=2).train(
    ...     values, phi1, FlowConfig(epochs=30, hidden=16, layers=1, learning_rate=1e-2))
    >>> logp = block.log_prob(np.array([[0.0, 0.0], [0.0, np.nan], [np.nan, np.nan]]), np.zeros(3))
    >>> from scipy import stats  # the true densities: N(0.1 phi1, 1) x N(0, 0.5^2), and its marginal
    >>> truth = [stats.norm.logpdf(0.0) + stats.norm.logpdf(0.0, scale=0.5), stats.norm.logpdf(0.0), 0.0]
    >>> [bool(abs(a - b) < 0.1) for a, b in zip(logp, truth)]
    [True, True, True]
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field
from torch import Tensor, nn

from .errors import InputError
from .output import atomic_path
from .parallel import WorkerPool
from .settings import BlockSection, FlowConfig
from .training import EarlyStopping, Evaluation, TrainingState
from .training import train as run_training

__all__ = ["GaussianMixtureBlockConfig", "GaussianMixtureDensity"]

_LOG_2PI = math.log(2.0 * math.pi)
_MIN_LOG_SD = math.log(1e-3)  # in standardised units: no component narrower than 1e-3 of the data's spread


class GaussianMixtureDensity(nn.Module):
    """A conditional diagonal Gaussian mixture over a block's coordinates (see the module).

    Arguments:
        names: The block's coordinates, in column order.
        components: The number of Gaussians ``K``.
        settings: The network's size (``hidden``, ``layers``) and training settings.
        x_loc, x_scale: Standardisation of the coordinates (data units).
        context_loc, context_scale: Standardisation of phi1 (and phi2).
        errors: The coordinates whose measurement errors widen the Gaussians.
        phi2_context: Whether the network also sees phi2.

    Example:
        >>> gm = GaussianMixtureDensity(("x",), 3, FlowConfig(hidden=8, layers=1), np.zeros(1), np.ones(1),
        ...                             np.zeros(1), np.ones(1))
        >>> gm.log_prob(np.array([[0.0]]), np.zeros(1)).shape
        (1,)
    """

    kind = "gaussian_mixture"

    def __init__(
        self,
        names: Sequence[str],
        components: int,
        settings: FlowConfig,
        x_loc: np.ndarray,
        x_scale: np.ndarray,
        context_loc: np.ndarray,
        context_scale: np.ndarray,
        errors: Sequence[str] = (),
        phi2_context: bool = False,
    ):
        super().__init__()
        self.names = tuple(str(n) for n in names)
        self.components = int(components)
        self.settings = settings
        self.errors = tuple(errors)
        self.phi2_context = bool(phi2_context)
        self.limits: dict[str, tuple[float | None, float | None]] = {}
        self.locus = None
        d, width = len(self.names), 1 + int(self.phi2_context)
        for key, value in (("x_loc", x_loc), ("x_scale", x_scale), ("context_loc", context_loc), ("context_scale", context_scale)):
            self.register_buffer(key, torch.as_tensor(np.asarray(value, dtype=np.float32)))
        layers: list[nn.Module] = []
        for _ in range(settings.layers):
            layers += [nn.Linear(width, settings.hidden), nn.Tanh()]
            width = settings.hidden
        self.net = nn.Sequential(*layers, nn.Linear(width, self.components * (1 + 2 * d)))

    def _mixture(self, context: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """log weights ``(N, K)``, means and log widths ``(N, K, D)``, standardised."""
        out = self.net((context - self.context_loc) / self.context_scale)
        k, d = self.components, len(self.names)
        log_w = torch.log_softmax(out[:, :k], dim=-1)
        mean = out[:, k : k + k * d].reshape(-1, k, d)
        log_sd = out[:, k + k * d :].reshape(-1, k, d).clamp_min(_MIN_LOG_SD)
        return log_w, mean, log_sd

    def _log_prob(self, x: Tensor, context: Tensor, err: Tensor) -> Tensor:
        """ln p over each row's finite coordinates (standardised ``x``, NaN missing; ``err`` standardised)."""
        observed = torch.isfinite(x)
        x = torch.where(observed, x, 0.0)
        log_w, mean, log_sd = self._mixture(context)
        var = torch.exp(2.0 * log_sd) + (err * err).unsqueeze(1)
        terms = -0.5 * ((x.unsqueeze(1) - mean) ** 2 / var + torch.log(var) + _LOG_2PI)
        per_component = (terms * observed.unsqueeze(1)).sum(-1)
        jacobian = (torch.log(self.x_scale) * observed).sum(-1)
        logp = torch.logsumexp(log_w + per_component, dim=-1) - jacobian
        return torch.where(observed.any(-1), logp, 0.0)

    def _tensors(self, values, phi1, errors, phi2) -> tuple[Tensor, Tensor, Tensor]:
        device = self.x_loc.device
        x = (torch.as_tensor(np.asarray(values, dtype=np.float32), device=device) - self.x_loc) / self.x_scale
        columns = [np.asarray(phi1, dtype=np.float32)]
        if self.phi2_context:
            if phi2 is None or not np.all(np.isfinite(phi2)):
                raise InputError(f"block {self.names!r}: conditioned on phi2; give every star's phi2")
            columns.append(np.asarray(phi2, dtype=np.float32))
        context = torch.as_tensor(np.stack(columns, axis=1), device=device)
        err = torch.zeros_like(x)
        if self.errors:
            if errors is None or np.shape(errors) != np.shape(values):
                raise InputError(f"block {self.names!r}: its Gaussians are widened by the errors of {self.errors!r}; "
                                 f"give errors of shape {np.shape(values)}")
            use = torch.tensor([n in self.errors for n in self.names], device=device)
            given = torch.as_tensor(np.nan_to_num(np.asarray(errors, dtype=np.float32)), device=device) / self.x_scale
            err = torch.where(use, given, 0.0)
        return x, context, err

    def log_prob(
        self,
        values: np.ndarray,
        phi1: np.ndarray,
        *,
        errors: np.ndarray | None = None,
        threads: int | None = None,
        phi2: np.ndarray | None = None,
        chunk_size: int = 65536,
    ) -> np.ndarray:
        """ln p(each star's observed coordinates | phi1), float64 ``(N,)``, in the data's units; 0 with none observed.

        ``threads`` is accepted for the interface's sake (this block is cheap)."""
        values = np.asarray(values, dtype=float)
        if values.ndim != 2 or values.shape[1] != len(self.names):
            raise InputError(f"block {self.names!r}: values of shape {values.shape}, expected (N, {len(self.names)})")
        out = np.zeros(len(values))
        with torch.no_grad():
            for start in range(0, len(values), chunk_size):
                rows = slice(start, start + chunk_size)
                x, context, err = self._tensors(
                    values[rows], np.asarray(phi1)[rows], None if errors is None else np.asarray(errors)[rows],
                    None if phi2 is None else np.asarray(phi2)[rows],
                )
                out[rows] = self._log_prob(x, context, err).double().cpu().numpy()
        return out

    def sample(self, phi1: np.ndarray, *, seed: int | None = None, phi2: np.ndarray | None = None) -> np.ndarray:
        """One error-free draw of the block's coordinates per phi1, float64 ``(N, D)``.

        Example:
            >>> gm = GaussianMixtureDensity(("x",), 2, FlowConfig(hidden=8, layers=1), np.full(1, 3.0),
            ...                             np.ones(1), np.zeros(1), np.ones(1))
            >>> gm.sample(np.zeros(5), seed=0).shape
            (5, 1)
        """
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        columns = [np.asarray(phi1, dtype=np.float32)] + ([np.asarray(phi2, dtype=np.float32)] if self.phi2_context else [])
        context = torch.as_tensor(np.stack(columns, axis=1), device=self.x_loc.device)
        with torch.no_grad():
            log_w, mean, log_sd = (t.cpu() for t in self._mixture(context))
            k = torch.multinomial(log_w.exp(), 1, generator=generator).squeeze(-1)
            rows = torch.arange(len(k))
            z = torch.randn(mean[rows, k].shape, generator=generator)
            draws = mean[rows, k] + torch.exp(log_sd[rows, k]) * z
        return (draws * self.x_scale.cpu() + self.x_loc.cpu()).double().numpy()

    def tensors(self) -> Iterator[Tensor]:
        """Every weight and standardisation, in a fixed order."""
        yield from self.state_dict().values()

    def block_state(self) -> dict[str, Any]:
        """Plain data: kind, names, settings and tensors (:meth:`GaussianMixtureBlockConfig.density_from_state`)."""
        return {
            "kind": self.kind,
            "names": list(self.names),
            "components": self.components,
            "errors": list(self.errors),
            "phi2_context": self.phi2_context,
            "settings": self.settings.model_dump(),
            "state": {k: v.detach().cpu() for k, v in super().state_dict().items()},
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Write :meth:`block_state` with :func:`torch.save`."""
        path = Path(path)
        with atomic_path(path, overwrite=True) as tmp:
            torch.save(self.block_state(), tmp)
        return path


class GaussianMixtureBlockConfig(BlockSection):
    """A block whose density is a conditional Gaussian mixture: ``kind: gaussian_mixture``.

    Its network has ``flow.hidden`` units in ``flow.layers`` layers and it is
    trained with ``flow``'s training settings (epochs, max_steps, batch_size,
    learning_rate, weight_decay, validation_fraction, patience); the spline
    settings (backend, transforms, bins) and averaging are not used.

    Example:
        >>> GaussianMixtureBlockConfig(coordinates=["pm_phi1_cosphi2", "pm_phi2"]).components
        8
    """

    limits_allowed: ClassVar[bool] = False
    locus_allowed: ClassVar[bool] = False

    kind: Literal["gaussian_mixture"] = Field(
        "gaussian_mixture", description="gaussian_mixture: a Gaussian mixture whose parameters are functions of phi1"
    )
    coordinates: list[str] = Field(min_length=1, description="the block's coordinates and bands")
    components: int = Field(8, ge=1, le=64, description="Gaussians in the mixture")
    flow: FlowConfig | None = Field(
        None,
        description="its network's size (hidden, layers) and training settings, replacing model.background.flow "
        "(null: those)",
    )

    def train(
        self,
        values: np.ndarray,
        phi1: np.ndarray,
        shared: FlowConfig,
        *,
        marginal_without: Sequence[str] = (),
        errors: np.ndarray | None = None,
        limits: dict[str, tuple[float | None, float | None]] | None = None,
        locus: Sequence[str] | None = None,
        phi2: np.ndarray | None = None,
        progress: bool = False,
        workers: int = 1,
        pool: WorkerPool | None = None,
        seed: int = 0,
        device: str = "cpu",
    ) -> GaussianMixtureDensity:
        """Fit the mixture to the training stars by maximum likelihood (AdamW,
        mini-batches, the best held-out epoch kept). Its marginals are exact,
        so ``marginal_without`` needs nothing; ``workers``, ``pool`` and ``progress``
        are not used; ``limits`` and ``locus`` are refused."""
        names = tuple(self.coordinates)
        if limits:
            raise InputError(f"background block {list(names)}: a gaussian_mixture block cannot honour limits {limits}")
        if locus is not None:
            raise InputError(f"background block {list(names)}: a gaussian_mixture block cannot model a colour locus")
        settings = self.settings(shared)
        values = np.asarray(values, dtype=float)
        phi1 = np.asarray(phi1, dtype=float)
        keep = np.isfinite(values).any(axis=1)
        if keep.sum() < 2:
            raise InputError(f"background block {list(names)}: fewer than 2 training stars have any of its coordinates")
        values, phi1 = values[keep], phi1[keep]
        context = phi1[:, None] if phi2 is None else np.stack([phi1, np.asarray(phi2, dtype=float)[keep]], axis=1)
        x_loc = np.nanmean(values, axis=0)
        x_scale = np.nanstd(values, axis=0)
        if not np.all(np.isfinite(x_scale) & (x_scale > 0)):
            raise InputError(f"background block {list(names)}: a coordinate has no spread among the training stars")
        error_names: tuple[str, ...] = ()
        if errors is not None:
            errors = np.asarray(errors, dtype=float)[keep]
            with np.errstate(invalid="ignore"):
                error_names = tuple(
                    n for j, n in enumerate(names)
                    if np.all(errors[np.isfinite(values[:, j]), j] > 0)
                )  # fmt: skip
        c_scale = context.std(axis=0)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = GaussianMixtureDensity(
                names, self.components, settings, x_loc, x_scale, context.mean(axis=0),
                np.where(c_scale > 0, c_scale, 1.0), error_names, phi2 is not None,
            ).to(device)  # fmt: skip
        x, c, err = model._tensors(values, phi1, errors, None if phi2 is None else context[:, 1])
        _fit(model, x, c, err, settings, seed)
        return model.eval()

    @staticmethod
    def density_from_state(state: dict[str, Any], *, device: str = "cpu") -> GaussianMixtureDensity:
        """The density :meth:`GaussianMixtureDensity.block_state` describes."""
        try:
            weights = state["state"]
            model = GaussianMixtureDensity(
                state["names"], state["components"], FlowConfig(**state["settings"]),
                weights["x_loc"].numpy(), weights["x_scale"].numpy(),
                weights["context_loc"].numpy(), weights["context_scale"].numpy(),
                state.get("errors", ()), state.get("phi2_context", False),
            )  # fmt: skip
            model.load_state_dict(weights)
        except (KeyError, TypeError, RuntimeError, ValueError) as error:
            message = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise InputError(f"gaussian_mixture block state: malformed ({message})") from None
        return model.to(device).eval()


def _fit(model: GaussianMixtureDensity, x: Tensor, context: Tensor, err: Tensor, settings: FlowConfig, seed: int) -> None:
    """Maximum likelihood with AdamW and held-out early stopping (the best epoch's weights are kept),
    in the shared training loop (:func:`streammix.training.train`)."""
    n = len(x)
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(n, generator=generator).to(x.device)
    n_valid = min(max(int(round(settings.validation_fraction * n)), 1), n - 1) if settings.validation_fraction > 0 else 0
    valid, train = order[:n_valid], order[n_valid:]
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay, foreach=True
    )
    initial = copy.deepcopy(model.state_dict())
    max_steps = settings.max_steps if settings.max_steps is not None else math.inf
    steps = 0

    def epoch(state: TrainingState) -> float:
        nonlocal steps
        model.train()
        permutation = train[torch.randperm(len(train), generator=generator).to(x.device)]
        loss = torch.full((), math.nan)
        for start in range(0, len(train), settings.batch_size):
            batch = permutation[start : start + settings.batch_size]
            optimizer.zero_grad()
            loss = -model._log_prob(x[batch], context[batch], err[batch]).mean()
            loss.backward()
            optimizer.step()
            steps += 1
            if steps >= max_steps:
                break
        return float(loss.detach())

    def evaluate() -> Evaluation:
        model.eval()
        with torch.no_grad():
            losses = -model._log_prob(x[valid], context[valid], err[valid])
        return Evaluation.of(losses, float(losses.mean()))

    state = run_training(
        epoch,
        evaluate if n_valid else None,
        lambda: copy.deepcopy(model.state_dict()),
        model.load_state_dict,
        total=settings.epochs,
        stopping=EarlyStopping(settings.patience, "epochs", tolerance=1e-6),
        budget=lambda: f"max steps ({settings.max_steps})" if steps >= max_steps else None,
    )
    if n_valid and state.best is None:  # no finite held-out loss: the initial weights
        model.load_state_dict(initial)
