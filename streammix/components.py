"""Mixture components: bounded parameters, the networks that make them smooth
functions of phi1, and the stream-like and background components.

A component declares the :class:`Parameter` s it needs (each bounded in
physical units), a :class:`ParameterNet` maps the scaled phi1 to all of them,
and the component turns those parameters into a per-star log-likelihood for the
coordinates each star has observed. A coordinate missing for a star is left out
of every component's likelihood for that star (see :mod:`streammix.mixture`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

__all__ = [
    "BackgroundComponent",
    "FunctionDropout",
    "NetworkSettings",
    "Parameter",
    "ParameterNet",
    "StreamComponent",
    "stream_parameters",
]

LN10_5 = math.log(10.0) / 5.0
LOG_2PI = math.log(2.0 * math.pi)


@dataclass(frozen=True)
class Parameter:
    r"""A phi1-dependent parameter bounded to ``[low, high]`` in physical units.

    The network's raw output :math:`r` becomes
    :math:`\mathrm{low} + (\mathrm{high} - \mathrm{low})\,\sigma(r)`.

    Arguments:
        name: The parameter's name, e.g. ``"phi2"`` or ``"pm_phi2_width"``.
        low: Lower bound, in ``unit``.
        high: Upper bound, in ``unit``.
        unit: The physical unit (astropy unit string).

    Example:
        >>> import torch
        >>> p = Parameter("phi2_width", 0.05, 1.0, "deg")
        >>> p.constrain(torch.tensor([0.0])).item()
        0.525
        >>> round(p.constrain(p.unconstrain(torch.tensor([0.2]))).item(), 6)
        0.2
    """

    name: str
    low: float
    high: float
    unit: str = ""

    def __post_init__(self) -> None:
        if not self.high > self.low:
            raise ValueError(f"parameter '{self.name}': upper bound {self.high} <= lower {self.low}")

    def constrain(self, raw: Tensor) -> Tensor:
        """Map an unbounded value into ``[low, high]``."""
        return self.low + (self.high - self.low) * torch.sigmoid(raw)

    def unconstrain(self, value: Tensor) -> Tensor:
        """Inverse of :meth:`constrain`, clipped just inside the bounds."""
        u = (value - self.low) / (self.high - self.low)
        return torch.logit(u.clamp(1e-4, 1 - 1e-4))


@dataclass(frozen=True)
class NetworkSettings:
    """Size of a mixture density network.

    Arguments:
        hidden: Width of each hidden layer.
        layers: Number of hidden layers.
        dropout: Dropout probability after each hidden layer (for MC dropout).
            Off by default: trained with dropout, the widths also cover the
            jitter dropout puts on the tracks (on the default mock, 0.05 made
            the proper-motion widths 1.4-3 times too wide and spoilt the
            calibration); the ensemble gives the uncertainty.

    Example:
        >>> NetworkSettings(hidden=32).layers
        3
    """

    hidden: int = 64
    layers: int = 3
    dropout: float = 0.0


class FunctionDropout(nn.Module):
    """Dropout with one mask shared by every phi1 point of a forward pass.

    A network with dropout then stays a smooth function of phi1: each mask is one
    draw of the whole function (MC dropout over functions, not points).

    Arguments:
        p: The probability of zeroing a hidden unit.

    Example:
        >>> import torch
        >>> drop = FunctionDropout(0.5).train()
        >>> out = drop(torch.ones(3, 8))
        >>> bool((out == out[0]).all())
        True
    """

    def __init__(self, p: float):
        super().__init__()
        self.p = float(p)

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0:
            return x
        mask = torch.bernoulli(torch.full_like(x[..., :1, :], 1 - self.p)) / (1 - self.p)
        return x * mask


def mlp(settings: "NetworkSettings", outputs: int) -> tuple[nn.Sequential, nn.Linear]:
    """Hidden layers (tanh, function dropout) and the output layer of a phi1 network."""
    layers: list[nn.Module] = []
    width = 1
    for _ in range(settings.layers):
        layers += [nn.Linear(width, settings.hidden), nn.Tanh()]
        if settings.dropout > 0:
            layers.append(FunctionDropout(settings.dropout))
        width = settings.hidden
    return nn.Sequential(*layers), nn.Linear(width, outputs)


class ParameterNet(nn.Module):
    r"""Mixture density network: scaled phi1 to bounded physical parameters.

    Arguments:
        parameters: The parameters to output, one network output each.
        settings: The network's width, depth and dropout.

    Example:
        >>> import torch
        >>> net = ParameterNet([Parameter("phi2", -5, 5, "deg")], NetworkSettings(hidden=8))
        >>> out = net(torch.linspace(-1, 1, 4))
        >>> out["phi2"].shape
        torch.Size([4])
        >>> bool(((out["phi2"] > -5) & (out["phi2"] < 5)).all())
        True
    """

    def __init__(self, parameters: Sequence[Parameter], settings: NetworkSettings = NetworkSettings()):
        super().__init__()
        self.parameters_ = tuple(parameters)
        self.body, self.head = mlp(settings, len(self.parameters_))

    @property
    def names(self) -> tuple[str, ...]:
        """The parameter names, in output order."""
        return tuple(p.name for p in self.parameters_)

    def raw(self, phi1_scaled: Tensor) -> Tensor:
        """Unbounded outputs, shape ``(G, P)``."""
        return self.head(self.body(phi1_scaled.unsqueeze(-1)))

    def forward(self, phi1_scaled: Tensor) -> dict[str, Tensor]:
        raw = self.raw(phi1_scaled)
        return {p.name: p.constrain(raw[..., i]) for i, p in enumerate(self.parameters_)}


def stream_parameters(coordinates: Sequence[str], bounds: dict[str, tuple[float, float]]) -> list[Parameter]:
    """The parameters a stream-like component needs for ``coordinates``.

    ``phi2`` needs a track and a width; each proper motion a track and an
    intrinsic dispersion; parallax and photometry both need the distance-modulus
    track and its spread.

    Arguments:
        coordinates: Observed coordinates the model uses.
        bounds: ``(low, high)`` per parameter name, in physical units.

    Example:
        >>> [p.name for p in stream_parameters(["phi2"], {"phi2": (-5, 5), "phi2_width": (0.05, 1)})]
        ['phi2', 'phi2_width']
    """
    names: list[tuple[str, str]] = []
    if "phi2" in coordinates:
        names += [("phi2", "deg"), ("phi2_width", "deg")]
    for pm in ("pm_phi1_cosphi2", "pm_phi2"):
        if pm in coordinates:
            names += [(pm, "mas/yr"), (f"{pm}_width", "mas/yr")]
    if "parallax" in coordinates or "photometry" in coordinates:
        names += [("distmod", "mag"), ("distmod_width", "mag")]
    missing = [n for n, _ in names if n not in bounds]
    if missing:
        raise ValueError(f"no bounds given for parameter(s) {', '.join(missing)}")
    return [Parameter(n, *map(float, bounds[n]), unit=u) for n, u in names]


class StreamComponent(nn.Module):
    r"""A stream-like component (stream, spur, cocoon...) of the mixture.

    Per star, with parameters interpolated at its phi1:

    - phi2 ~ Normal(phi2, phi2_width² + err²) truncated to the field's phi2 range;
    - proper motions ~ 2-D Normal(mean, diag(width²) + C_obs) with the observed
      covariance including the correlation; a star with one proper motion uses
      the 1-D marginal;
    - parallax ~ Normal(10^((10 - DM)/5), (ln10/5 · parallax · DM_width)² + err²);
    - photometry through an optional photometric likelihood sharing DM.

    Arguments:
        name: The component's name (``"stream"``, ``"spur"``...).
        coordinates: The observed coordinates of the model.
        bounds: ``(low, high)`` per parameter, physical units.
        phi2_range: The field's phi2 limits (deg), for the truncation.
        settings: The network's size.
        phi1_range: Optional phi1 range outside which the weight is ~0.
        photometry: The isochrone likelihood (None: no photometric term).
        selection: The catalogue's cuts on observed parallax and proper motions
            (:class:`~streammix.selection.SelectionCuts`): the density is
            divided, star by star, by the probability of passing them.

    Example:
        >>> comp = StreamComponent("stream", ["phi2"], {"phi2": (-5, 5), "phi2_width": (0.05, 1)},
        ...                        phi2_range=(-5, 5), settings=NetworkSettings(hidden=8))
        >>> comp.parameter_names
        ('phi2', 'phi2_width')
    """

    kind = "stream"

    def __init__(
        self,
        name: str,
        coordinates: Sequence[str],
        bounds: dict[str, tuple[float, float]],
        phi2_range: tuple[float, float],
        settings: NetworkSettings = NetworkSettings(),
        phi1_range: tuple[float, float] | None = None,
        photometry: nn.Module | None = None,
        selection=None,
    ):
        super().__init__()
        self.name = name
        self.selection = selection
        self.coordinates = tuple(coordinates)
        self.phi2_range = (float(phi2_range[0]), float(phi2_range[1]))
        self.phi1_range = phi1_range
        uses = self.coordinates + (("photometry",) if photometry is not None else ())
        self.net = ParameterNet(stream_parameters(uses, bounds), settings)
        self.photometry = photometry

    @property
    def parameter_names(self) -> tuple[str, ...]:
        return self.net.names

    @property
    def parameter_specs(self) -> tuple[Parameter, ...]:
        return self.net.parameters_

    def _pm_selection(self, params: dict[str, Tensor], stars) -> Tensor:
        """log P(a star of this component with these errors passes the proper-motion cut)."""
        has = stars.has_pm1 & stars.has_pm2 & stars.has_selection
        mean = torch.stack([params["pm_phi1_cosphi2"], params["pm_phi2"]], dim=-1)
        cov = stars.pm_cov + torch.diag_embed(
            torch.stack([params["pm_phi1_cosphi2_width"] ** 2, params["pm_phi2_width"] ** 2], dim=-1)
        )
        cut = self.selection.pm_log_probability(mean, cov, stars.selection_matrix, stars.selection_offset)
        return torch.where(has, cut, 0.0)

    def phi2_cdf(self, phi2: Tensor, params: dict[str, Tensor], phi2_err: Tensor) -> Tensor:
        """P(observed phi2 < ``phi2``) under this component's phi2 density (the
        truncated normal of :meth:`log_prob`), for residuals and predictions;
        ``params`` and ``phi2_err`` broadcast against ``phi2``."""
        low, high = self.phi2_range
        sigma = _hypot(params["phi2_width"], phi2_err)
        z_lo = torch.special.ndtr((low - params["phi2"]) / sigma)
        z_hi = torch.special.ndtr((high - params["phi2"]) / sigma)
        z = torch.special.ndtr((phi2.clamp(low, high) - params["phi2"]) / sigma)
        return (z - z_lo) / (z_hi - z_lo).clamp_min(1e-30)

    def log_prob(self, params: dict[str, Tensor], stars, *, photometry: bool = True) -> Tensor:
        """Per-star log-likelihood of the observed coordinates, shape ``(N,)``
        (without the isochrone term if ``photometry`` is False)."""
        total = torch.zeros_like(stars.phi1)
        if "phi2" in self.coordinates:
            total = total + torch.where(
                stars.has_phi2,
                truncated_normal_logpdf(
                    stars.phi2, params["phi2"], _hypot(params["phi2_width"], stars.phi2_err), *self.phi2_range
                ),
                0.0,
            )
        pm_names = [c for c in ("pm_phi1_cosphi2", "pm_phi2") if c in self.coordinates]
        if len(pm_names) == 2:
            total = total + proper_motion_logpdf(
                stars,
                params["pm_phi1_cosphi2"],
                params["pm_phi2"],
                params["pm_phi1_cosphi2_width"],
                params["pm_phi2_width"],
            )
        elif len(pm_names) == 1:
            (pm,) = pm_names
            i = 0 if pm == "pm_phi1_cosphi2" else 1
            has = stars.has_pm1 if i == 0 else stars.has_pm2
            var = params[f"{pm}_width"] ** 2 + stars.pm_cov[:, i, i]
            total = total + torch.where(has, normal_logpdf(stars.pm[:, i], params[pm], var), 0.0)
        if "parallax" in self.coordinates:
            plx = 10.0 ** ((10.0 - params["distmod"]) / 5.0)
            var = (LN10_5 * plx * params["distmod_width"]) ** 2 + stars.parallax_err**2
            total = total + torch.where(stars.has_parallax, normal_logpdf(stars.parallax, plx, var), 0.0)
            if self.selection is not None and self.selection.parallax is not None:
                cut = self.selection.parallax_log_probability(plx, torch.sqrt(var))
                total = total - torch.where(stars.has_parallax, cut, 0.0)
        if self.selection is not None and self.selection.pm_low is not None and len(pm_names) == 2:
            total = total - self._pm_selection(params, stars)
        if self.photometry is not None and photometry:
            prepared = stars.photometry_of() if getattr(stars, "photometry", None) is not None else None
            if prepared is not None:
                total = total + self.photometry.log_prob_prepared(params["distmod"], params["distmod_width"], prepared)
            else:
                total = total + self.photometry.log_prob(params["distmod"], params["distmod_width"], stars)
        return total


class BackgroundComponent(nn.Module):
    r"""The background: frozen conditional flows times a phi2 density.

    The flows' per-star log-density (over the observed coordinates of each
    block) is computed once, when the stars are prepared, and stored as
    ``stars.background_logp``. Only the phi2 density is fitted with the mixture:

    - ``"uniform"``: 1 / (phi2_max - phi2_min);
    - ``"exponential"``: proportional to exp(slope(phi1) · phi2), truncated to the
      field, with the slope from a small network (bounded, in 1/deg).

    Arguments:
        phi2_range: The field's phi2 limits (deg).
        phi2_model: ``"uniform"`` or ``"exponential"``.
        settings: The slope network's size (exponential only).
        slope_bound: Bound on ``|slope|`` in 1/deg.

    Example:
        >>> import torch
        >>> bg = BackgroundComponent((-5.0, 5.0), "uniform")
        >>> [round(v, 5) for v in bg.phi2_logpdf(torch.zeros(2), {}).tolist()] == [round(-math.log(10), 5)] * 2
        True
    """

    kind = "background"

    def __init__(
        self,
        phi2_range: tuple[float, float],
        phi2_model: str = "exponential",
        settings: NetworkSettings = NetworkSettings(hidden=16, layers=2, dropout=0.0),
        slope_bound: float = 1.0,
        name: str = "background",
    ):
        super().__init__()
        if phi2_model not in ("uniform", "exponential"):
            raise ValueError(f"background phi2 model '{phi2_model}' is not 'uniform' or 'exponential'")
        self.name = name
        self.phi2_range = (float(phi2_range[0]), float(phi2_range[1]))
        self.phi2_model = phi2_model
        self.phi1_range = None
        params = [Parameter("phi2_slope", -slope_bound, slope_bound, "1/deg")] if phi2_model == "exponential" else []
        self.net = ParameterNet(params, settings) if params else None
        if self.net is not None:
            nn.init.zeros_(self.net.head.weight)
            nn.init.zeros_(self.net.head.bias)

    @property
    def parameter_names(self) -> tuple[str, ...]:
        return self.net.names if self.net is not None else ()

    @property
    def parameter_specs(self) -> tuple[Parameter, ...]:
        return self.net.parameters_ if self.net is not None else ()

    def phi2_logpdf(self, phi2: Tensor, params: dict[str, Tensor]) -> Tensor:
        a, b = self.phi2_range
        if self.phi2_model == "uniform":
            return torch.full_like(phi2, -math.log(b - a))
        return exponential_logpdf(phi2, params["phi2_slope"], a, b)

    def phi2_cdf(self, phi2: Tensor, params: dict[str, Tensor], phi2_err: Tensor | None = None) -> Tensor:
        """P(phi2' < ``phi2``) under the background's phi2 density (``phi2_err`` is not used).

        Example:
            >>> import torch
            >>> bg = BackgroundComponent((-5.0, 5.0), "exponential")
            >>> cdf = bg.phi2_cdf(torch.tensor([-5.0, 0.0, 5.0]), {"phi2_slope": torch.tensor(0.3)})
            >>> [round(v, 4) for v in cdf.tolist()]
            [0.0, 0.1824, 1.0]
        """
        a, b = self.phi2_range
        x = phi2.clamp(a, b)
        if self.phi2_model == "uniform":
            return (x - a) / (b - a)
        slope = params["phi2_slope"]
        # (exp(s (x - a)) - 1) / (exp(s (b - a)) - 1), the uniform's (x - a)/(b - a) as s -> 0
        small = slope.abs() * (b - a) < 1e-4
        safe = torch.where(small, torch.ones_like(slope), slope)
        exact = torch.expm1(safe * (x - a)) / torch.expm1(safe * (b - a))
        return torch.where(small, (x - a) / (b - a), exact)

    def log_prob(self, params: dict[str, Tensor], stars) -> Tensor:
        """Per-star log-likelihood of the observed coordinates, shape ``(N,)``."""
        logp = stars.background_logp
        if stars.uses_phi2:
            logp = logp + torch.where(stars.has_phi2, self.phi2_logpdf(stars.phi2, params), 0.0)
        return logp


# --- densities (plain tensor functions) -------------------------------------


def _hypot(a: Tensor, b: Tensor) -> Tensor:
    return torch.sqrt(a * a + b * b)


def normal_logpdf(x: Tensor, mean: Tensor, var: Tensor) -> Tensor:
    """log N(x | mean, var), elementwise.

    Example:
        >>> import torch
        >>> round(normal_logpdf(torch.tensor(0.0), torch.tensor(0.0), torch.tensor(1.0)).item(), 6)
        -0.918939
    """
    return -0.5 * (LOG_2PI + torch.log(var) + (x - mean) ** 2 / var)


def truncated_normal_logpdf(x: Tensor, mean: Tensor, sigma: Tensor, low: float, high: float) -> Tensor:
    """log of a normal density truncated to ``[low, high]``, elementwise.

    Example:
        >>> import torch
        >>> from scipy.stats import truncnorm
        >>> x, m, s = torch.tensor(0.3), torch.tensor(0.5), torch.tensor(0.4)
        >>> ours = truncated_normal_logpdf(x, m, s, -1.0, 1.0).item()
        >>> ref = truncnorm.logpdf(0.3, (-1 - 0.5) / 0.4, (1 - 0.5) / 0.4, 0.5, 0.4)
        >>> bool(abs(ours - ref) < 1e-6)
        True
    """
    z_hi = (high - mean) / sigma
    z_lo = (low - mean) / sigma
    norm = torch.special.ndtr(z_hi) - torch.special.ndtr(z_lo)
    return normal_logpdf(x, mean, sigma * sigma) - torch.log(norm.clamp_min(1e-30))


def exponential_logpdf(x: Tensor, slope: Tensor, low: float, high: float) -> Tensor:
    """log of exp(slope·x) normalised on ``[low, high]`` (uniform as slope -> 0).

    Example:
        >>> import torch
        >>> import numpy as np
        >>> x = torch.linspace(-2, 3, 20001, dtype=torch.float64)
        >>> p = exponential_logpdf(x, torch.tensor(0.7, dtype=torch.float64), -2.0, 3.0).exp()
        >>> round(float(np.trapezoid(p.numpy(), x.numpy())), 6)
        1.0
    """
    width = high - low
    # log ∫ exp(s x) dx over [low, high] = s*low + log((exp(s*width) - 1)/s), stable near s=0
    sw = slope * width
    small = sw.abs() < 1e-4
    safe = torch.where(small, torch.ones_like(sw), sw)
    log_ratio = torch.where(small, sw / 2, torch.log(torch.expm1(safe) / safe))
    log_norm = slope * low + math.log(width) + log_ratio
    return slope * x - log_norm


def proper_motion_logpdf(stars, mu1: Tensor, mu2: Tensor, width1: Tensor, width2: Tensor) -> Tensor:
    """2-D Gaussian of the observed proper motions with intrinsic + observed covariance.

    Stars with both proper motions use the 2-D density (closed-form 2x2 inverse,
    correlation included); stars with one use its 1-D marginal; stars with
    neither contribute 0.
    """
    c11 = width1**2 + stars.pm_cov[:, 0, 0]
    c22 = width2**2 + stars.pm_cov[:, 1, 1]
    c12 = stars.pm_cov[:, 0, 1]
    d1 = stars.pm[:, 0] - mu1
    d2 = stars.pm[:, 1] - mu2
    det = (c11 * c22 - c12 * c12).clamp_min(1e-30)
    maha = (c22 * d1 * d1 - 2 * c12 * d1 * d2 + c11 * d2 * d2) / det
    both = -0.5 * (2 * LOG_2PI + torch.log(det) + maha)
    only1 = normal_logpdf(stars.pm[:, 0], mu1, c11)
    only2 = normal_logpdf(stars.pm[:, 1], mu2, c22)
    h1, h2 = stars.has_pm1, stars.has_pm2
    return torch.where(h1 & h2, both, torch.where(h1, only1, torch.where(h2, only2, 0.0)))
