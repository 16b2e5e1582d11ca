"""Mixture components: bounded parameters, the networks that make them smooth
functions of phi1, and the stream-like and background components.

A component declares the :class:`Parameter` s it needs (each bounded in
physical units), a :class:`ParameterNet` maps the scaled phi1 to all of them,
and the component turns those parameters into a per-star log-likelihood for the
coordinates each star has observed. A coordinate missing for a star is left out
of every component's likelihood for that star (see :mod:`streammix.mixture`).

What the mixture needs of a component is :class:`Component`; a config chooses
a component's type by its ``kind:`` (:data:`streammix.config.COMPONENT_KINDS`),
whose settings class (:class:`ComponentConfig` for ``kind: stream``) builds it.
A new kind is one file holding a settings class with a ``kind`` and a
``build`` method (and the component, if it is not a :class:`StreamComponent`),
one line in that registry and one entry in ``tests/test_components.py``; see
:mod:`streammix.field_population` and the documentation's "Add your own
component".
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

import numpy as np
import torch
from pydantic import Field, field_validator
from torch import Tensor, nn

from .densities import exponential_logpdf, normal_logpdf, proper_motion_logpdf
from .dispersion import VelocityDispersionConfig, VelocityDispersionPrior
from .profiles import PROFILES, CrossTrackProfile, Gaussian, get_profile
from .settings import ControlPointConfig, GalstreamsPrior, NetworkConfig, Section

__all__ = [
    "DEFAULT_INIT",
    "DEFAULT_WIDTH_BOUNDS",
    "BackgroundComponent",
    "Component",
    "ComponentConfig",
    "FunctionDropout",
    "NetworkSettings",
    "Parameter",
    "ParameterNet",
    "StreamComponent",
    "draw_stream",
    "modelled_magnitudes",
    "stream_parameters",
]

LN10_5 = math.log(10.0) / 5.0

# A stream-like component is thin and cold: its widths are bounded so that it
# cannot turn into a second background (a cocoon or a wide spur sets its own).
DEFAULT_WIDTH_BOUNDS = {
    "phi2_width": (0.01, 1.0),
    "pm_phi1_cosphi2_width": (0.01, 1.0),
    "pm_phi2_width": (0.01, 1.0),
    "distmod": (10.0, 20.0),
    "distmod_width": (0.005, 0.3),
}
#: Warm-start values of a stream's widths (a config's ``init`` replaces them).
DEFAULT_INIT = {"phi2_width": 0.2, "pm_phi1_cosphi2_width": 0.3, "pm_phi2_width": 0.3, "distmod_width": 0.1}


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
        default: The warm-start value of a parameter without control points or
            a config's ``init`` (None: not pulled anywhere by the warm start).

    Example:
        >>> import torch
        >>> p = Parameter("phi2_width", 0.05, 1.0, "deg", default=0.2)
        >>> p.constrain(torch.tensor([0.0])).item()
        0.525
        >>> round(p.constrain(p.unconstrain(torch.tensor([0.2]))).item(), 6)
        0.2
    """

    name: str
    low: float
    high: float
    unit: str = ""
    default: float | None = None

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

    def table(self, phi1_scaled: Tensor) -> Tensor:
        """Every parameter in its bounds, shape ``(G, P)`` in :attr:`names` order: each
        column is :meth:`Parameter.constrain` of its raw output, in three tensor
        operations for all of them (the training step's cost is mostly the number of
        operations, not their size)."""
        raw = self.raw(phi1_scaled)
        low = torch.tensor([p.low for p in self.parameters_], dtype=raw.dtype, device=raw.device)
        span = torch.tensor([p.high - p.low for p in self.parameters_], dtype=raw.dtype, device=raw.device)
        return low + span * torch.sigmoid(raw)

    def forward(self, phi1_scaled: Tensor) -> dict[str, Tensor]:
        return dict(zip(self.names, self.table(phi1_scaled).unbind(-1)))


def stream_parameters(
    coordinates: Sequence[str],
    bounds: dict[str, tuple[float, float]],
    profile: CrossTrackProfile = Gaussian(),
    defaults: Mapping[str, float] | None = None,
) -> list[Parameter]:
    """The parameters a stream-like component needs for ``coordinates``.

    ``phi2`` needs a track, a width and the cross-track profile's shape
    parameters; each proper motion a track and an intrinsic dispersion;
    parallax and photometry both need the distance-modulus track and its spread.

    Arguments:
        coordinates: Observed coordinates the model uses.
        bounds: ``(low, high)`` per parameter name, in physical units.
        profile: The cross-track profile (its shape parameters' units come
            from it; their bounds from ``bounds`` like the others').
        defaults: Warm-start values by name (default: :data:`DEFAULT_INIT` and
            the profile's ``init``).

    Example:
        >>> [(p.name, p.default) for p in stream_parameters(["phi2"], {"phi2": (-5, 5), "phi2_width": (0.05, 1)})]
        [('phi2', None), ('phi2_width', 0.2)]
    """
    if defaults is None:
        defaults = DEFAULT_INIT | {p.name: p.init for p in profile.parameters}
    names: list[tuple[str, str]] = []
    if "phi2" in coordinates:
        names += [("phi2", "deg"), ("phi2_width", "deg")] + [(p.name, p.unit) for p in profile.parameters]
    for pm in ("pm_phi1_cosphi2", "pm_phi2"):
        if pm in coordinates:
            names += [(pm, "mas/yr"), (f"{pm}_width", "mas/yr")]
    if "parallax" in coordinates or "photometry" in coordinates:
        names += [("distmod", "mag"), ("distmod_width", "mag")]
    missing = [n for n, _ in names if n not in bounds]
    if missing:
        raise ValueError(f"no bounds given for parameter(s) {', '.join(missing)}")
    return [Parameter(n, *map(float, bounds[n]), unit=u, default=defaults.get(n)) for n, u in names]


@runtime_checkable
class Component(Protocol):
    """What the mixture needs of a component (:class:`StreamComponent` is one).

    A component is a :class:`torch.nn.Module` whose ``net`` (a
    :class:`ParameterNet`, or None for a component without parameters) maps
    the scaled phi1 to its parameters; the mixture evaluates it on its phi1
    grid and interpolates the values to the stars.

    Attributes:
        name: The component's name (its output columns are ``p_<name>``...).
        kind: Its kind in a config (``"stream"``, ``"field"``...).
        phi1_range: ``(low, high)`` (deg) outside which its weight is ~0, or None.
        net: The network giving its parameters, or None.
        parameter_specs: The parameters it declares (name, bounds, unit, default).

    Example:
        >>> comp = StreamComponent("stream", ["phi2"], {"phi2": (-5, 5), "phi2_width": (0.05, 1)},
        ...                        phi2_range=(-5, 5), settings=NetworkSettings(hidden=8))
        >>> isinstance(comp, Component)
        True
    """

    name: str
    kind: str
    phi1_range: tuple[float, float] | None
    net: ParameterNet | None

    @property
    def parameter_specs(self) -> tuple[Parameter, ...]: ...

    def log_prob(self, params: dict[str, Tensor], stars) -> Tensor:
        """Per-star log-likelihood of the observed coordinates, shape ``(N,)``,
        with ``params`` (name -> ``(N,)`` tensor) at each star's phi1."""
        ...

    def sample(self, phi1: np.ndarray, params: Mapping[str, np.ndarray] | None, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """True (error-free) values of stars of the component at ``phi1``, with
        ``params`` at those phi1 (None: its network's)."""
        ...


def modelled_magnitudes(stars: Any) -> Tensor:
    """Whether the isochrone terms model each star's magnitudes, shape ``(N,)``:
    the magnitudes are used (``stars.use_photometry``, with prepared photometry)
    and the star has at least one of the model's bands.

    Arguments:
        stars: The stars (a :class:`~streammix.mixture.StarTensors`, or any object
            with ``phi1``; a missing ``use_photometry``, ``photometry`` or
            ``has_mag`` counts as magnitudes not used).

    Example:
        >>> from types import SimpleNamespace
        >>> has_mag = torch.tensor([[True, False], [False, False]])
        >>> stars = SimpleNamespace(phi1=torch.zeros(2), has_mag=has_mag, use_photometry=True, photometry=object())
        >>> modelled_magnitudes(stars).tolist()
        [True, False]
        >>> modelled_magnitudes(SimpleNamespace(**{**vars(stars), "use_photometry": False})).tolist()
        [False, False]
    """
    has_mag = getattr(stars, "has_mag", None)
    used = getattr(stars, "use_photometry", False) and getattr(stars, "photometry", None) is not None
    if not used or has_mag is None or has_mag.shape[-1] == 0:
        return torch.zeros_like(stars.phi1, dtype=torch.bool)
    return has_mag.any(dim=-1)


def draw_stream(
    profile: CrossTrackProfile, params: Mapping[str, np.ndarray], rng: np.random.Generator
) -> dict[str, np.ndarray]:
    r"""True values of stream-like stars: the cross-track profile about the phi2
    track, Gaussian proper motions and distance moduli about theirs.

    One draw of ``rng.standard_normal((4, n))`` (phi2, the two proper motions,
    the distance modulus) and then the profile's own draws
    (:meth:`~streammix.profiles.CrossTrackProfile.standard_draws`): the order
    the mock and the injections have always drawn in, so they draw through it
    star for star as before.

    Arguments:
        profile: The cross-track profile.
        params: ``phi2``, ``phi2_width``, the profile's shape parameters,
            ``pm_phi1_cosphi2`` / ``pm_phi2`` and their ``_width``, ``distmod``
            and ``distmod_width``, arrays of the stars' length (a missing pair
            is not drawn).
        rng: The random generator.

    Returns:
        ``phi2``, ``pm_phi1_cosphi2``, ``pm_phi2``, ``distmod`` and ``parallax``
        (mas, from ``distmod``), those whose parameters were given.

    Example:
        >>> rng = np.random.default_rng(1)
        >>> n = 20000
        >>> draws = draw_stream(Gaussian(), {"phi2": np.zeros(n), "phi2_width": np.full(n, 0.3)}, rng)
        >>> round(float(draws["phi2"].std()), 2)
        0.3
    """
    n = max(np.size(value) for value in params.values())
    z = rng.standard_normal((4, n))
    out: dict[str, np.ndarray] = {}
    if "phi2" in params:
        out["phi2"] = params["phi2"] + params["phi2_width"] * profile.standard_draws(z[0], params, rng)
    for i, pm in enumerate(("pm_phi1_cosphi2", "pm_phi2"), start=1):
        if pm in params:
            out[pm] = params[pm] + params[f"{pm}_width"] * z[i]
    if "distmod" in params:
        out["distmod"] = params["distmod"] + params["distmod_width"] * z[3]
        out["parallax"] = 10.0 ** ((10.0 - out["distmod"]) / 5.0)
    return out


class StreamComponent(nn.Module):
    r"""A stream-like component (stream, spur, cocoon...) of the mixture.

    Per star, with parameters interpolated at its phi1:

    - phi2 ~ the cross-track profile (default Gaussian: Normal(phi2,
      phi2_width² + err²)) truncated to the field's phi2 range;
    - proper motions ~ 2-D Normal(mean, diag(width²) + C_obs) with the observed
      covariance including the correlation; a star with one proper motion uses
      the 1-D marginal;
    - parallax ~ Normal(10^((10 - DM)/5) + zero-point, (ln10/5 · parallax · DM_width)² + err²);
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
        cut_stars: Which stars ``selection`` divides: ``"all"``, or
            ``"without_photometry"``, those whose magnitudes its isochrone does not
            model. For a star with magnitudes the density over the magnitudes is
            the luminosity function cut by the magnitude limits, which, fitted to
            the cut catalogue, hold most of the cuts' loss of faint stars; the rest,
            a function of phi1, is left to the weights (an approximation), where
            dividing the star by its own probability of passing would count that
            loss twice (benchmarks/RESULTS.md, session 20).
        profile: The cross-track profile (:mod:`streammix.profiles`); default Gaussian.
        defaults: Warm-start values of its parameters (see :func:`stream_parameters`).
        parallax_zero_point: The catalogue's parallax zero-point (mas), added to the
            parallax the distance gives (``data.parallax_zero_point``).

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
        profile: CrossTrackProfile = Gaussian(),
        defaults: Mapping[str, float] | None = None,
        parallax_zero_point: float = 0.0,
        cut_stars: str = "all",
    ):
        super().__init__()
        if cut_stars not in ("all", "without_photometry"):
            raise ValueError(f"cut_stars {cut_stars!r}: choose 'all' or 'without_photometry'")
        self.name = name
        self.profile = profile
        self.selection = selection
        self.cut_stars = cut_stars
        self.parallax_zero_point = float(parallax_zero_point)
        self.coordinates = tuple(coordinates)
        self.phi2_range = (float(phi2_range[0]), float(phi2_range[1]))
        self.phi1_range = phi1_range
        uses = self.coordinates + (("photometry",) if photometry is not None else ())
        self.net = ParameterNet(stream_parameters(uses, bounds, profile, defaults), settings)
        self.photometry = photometry
        self.dispersion_prior: VelocityDispersionPrior | None = None  # set by build_mixture (training only)

    @property
    def selection_grid(self) -> tuple[Tensor, Tensor] | None:
        """The proper-motion cut on the phi1 grid (see :meth:`attach_selection_grid`), or None."""
        if not hasattr(self, "selection_matrix"):
            return None
        return self.selection_matrix, self.selection_offset

    def attach_selection_grid(self, matrix: Tensor, offset: Tensor) -> None:
        """The catalogue's proper-motion cut on the mixture's phi1 grid,
        ``pm_icrs = matrix @ pm_model + offset`` (shapes ``(G, 2, 2)``, ``(G, 2)``),
        for :meth:`selection_log_prior`."""
        self.register_buffer("selection_matrix", matrix, persistent=False)
        self.register_buffer("selection_offset", offset, persistent=False)

    def selection_log_prior(self, params: dict[str, Tensor]) -> Tensor:
        r"""A prior that the component's stars lie inside the catalogue's proper-motion cut.

        :math:`\sum_g \ln P(\text{an error-free star of the component at } \phi_{1,g}
        \text{ passes the cut})` over the phi1 grid (``params`` on the grid). A
        component normalised over the cut (``selection``) could otherwise sit
        outside the box, where divided by its tiny probability of passing it
        its density becomes a spike at the box's edge; a component inside the
        box pays nothing. Zero without a proper-motion cut.
        """
        if self.selection is None or self.selection.pm_low is None or self.selection_grid is None:
            return next(self.net.parameters()).new_zeros(())
        mean = torch.stack([params["pm_phi1_cosphi2"], params["pm_phi2"]], dim=-1)
        cov = torch.diag_embed(torch.stack([params["pm_phi1_cosphi2_width"] ** 2, params["pm_phi2_width"] ** 2], dim=-1))
        matrix, offset = self.selection_grid
        return self.selection.pm_log_probability(mean, cov, matrix.to(mean.dtype), offset.to(mean.dtype)).sum()

    @property
    def parameter_names(self) -> tuple[str, ...]:
        return self.net.names

    @property
    def parameter_specs(self) -> tuple[Parameter, ...]:
        return self.net.parameters_

    def _divided(self, stars) -> Tensor:
        """The stars whose density ``selection`` divides (see ``cut_stars``): with
        ``without_photometry``, those whose magnitudes this component's isochrone
        does not model (every star for a component without one, or where the
        magnitudes are not used: :func:`modelled_magnitudes`)."""
        if self.cut_stars == "all" or self.photometry is None:
            return torch.ones_like(stars.phi1, dtype=torch.bool)
        return ~modelled_magnitudes(stars)

    def _pm_selection(self, params: dict[str, Tensor], stars) -> Tensor:
        """log P(a star of this component with these errors passes the proper-motion cut)
        for the stars it divides (:meth:`_divided`) with both proper motions, 0 for the
        others: evaluated on those rows only (with ``without_photometry``, about half of them)."""
        rows = torch.nonzero(stars.has_pm1 & stars.has_pm2 & stars.has_selection & self._divided(stars)).squeeze(-1)
        mean = torch.stack([params["pm_phi1_cosphi2"], params["pm_phi2"]], dim=-1).index_select(0, rows)
        widths = torch.stack([params["pm_phi1_cosphi2_width"] ** 2, params["pm_phi2_width"] ** 2], dim=-1)
        cov = stars.pm_cov.index_select(0, rows) + torch.diag_embed(widths.index_select(0, rows))
        cut = self.selection.pm_log_probability(
            mean, cov, stars.selection_matrix.index_select(0, rows), stars.selection_offset.index_select(0, rows)
        )
        return torch.zeros(stars.phi1.shape, dtype=cut.dtype, device=cut.device).index_add(0, rows, cut)

    def phi2_cdf(self, phi2: Tensor, params: dict[str, Tensor], phi2_err: Tensor) -> Tensor:
        """P(observed phi2 < ``phi2``) under this component's phi2 density (its
        profile, truncated as in :meth:`log_prob`), for residuals and predictions;
        ``params`` and ``phi2_err`` broadcast against ``phi2``."""
        return self.profile.cdf(phi2, phi2_err, params, self.phi2_range)

    def sample(
        self, phi1: np.ndarray, params: Mapping[str, np.ndarray] | None, rng: np.random.Generator
    ) -> dict[str, np.ndarray]:
        """True (error-free) values of stars of this component at ``phi1``
        (:func:`draw_stream`), with ``params`` at those phi1, or the network's
        (the mixture's phi1 scaling is not known here: ``params`` None needs
        ``phi1`` already scaled to [-1, 1]).

        Example:
            >>> comp = StreamComponent("stream", ["phi2"], {"phi2": (-5, 5), "phi2_width": (0.05, 1)},
            ...                        phi2_range=(-5, 5), settings=NetworkSettings(hidden=8))
            >>> draws = comp.sample(np.zeros(3), {"phi2": np.ones(3), "phi2_width": np.full(3, 0.1)},
            ...                     np.random.default_rng(0))
            >>> sorted(draws), draws["phi2"].shape
            (['phi2'], (3,))
        """
        phi1 = np.asarray(phi1, dtype=float)
        if params is None:
            with torch.no_grad():
                first = next(self.net.parameters())
                values = self.net(torch.as_tensor(phi1, dtype=first.dtype, device=first.device))
            params = {k: v.cpu().numpy().astype(float) for k, v in values.items()}
        params = {k: np.broadcast_to(np.asarray(v, dtype=float), phi1.shape) for k, v in params.items()}
        return draw_stream(self.profile, params, rng)

    def log_prob(self, params: dict[str, Tensor], stars, *, photometry: bool = True) -> Tensor:
        """Per-star log-likelihood of the observed coordinates, shape ``(N,)``
        (without the isochrone term if ``photometry`` is False)."""
        total = torch.zeros_like(stars.phi1)
        if "phi2" in self.coordinates:
            total = total + torch.where(
                stars.has_phi2,
                self.profile.log_prob(stars.phi2, stars.phi2_err, params, self.phi2_range),
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
            observed = plx + self.parallax_zero_point if self.parallax_zero_point else plx
            total = total + torch.where(stars.has_parallax, normal_logpdf(stars.parallax, observed, var), 0.0)
            if self.selection is not None and self.selection.parallax is not None:
                cut = self.selection.parallax_log_probability(observed, torch.sqrt(var))
                total = total - torch.where(stars.has_parallax & self._divided(stars), cut, 0.0)
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


class ComponentConfig(Section):
    """A stream-like component (stream, spur, cocoon...): ``kind: stream``, the default.

    The settings class of a component kind: its ``kind`` names it in a config,
    :meth:`default_bounds` and :meth:`build` make the component, and
    :attr:`member` says whether its stars count as the stream's by default
    (``model.member_components``). Another kind subclasses it (e.g.
    :class:`~streammix.field_population.FieldComponentConfig`) or writes its
    own with the same fields and methods.

    Example:
        >>> cfg = ComponentConfig(name="stream")
        >>> cfg.kind, cfg.member
        ('stream', True)
        >>> cfg.default_bounds((-5.0, 5.0), None)["phi2_width"]
        (0.01, 1.0)
    """

    #: Whether the component's stars are members of the stream unless
    #: ``model.member_components`` says otherwise.
    member: ClassVar[bool] = True
    #: The component class :meth:`build` makes (a kind that only changes defaults keeps it).
    component_class: ClassVar[type] = StreamComponent

    kind: Literal["stream"] = Field(
        "stream",
        description="the component's kind (streammix.config.COMPONENT_KINDS): stream, a thin cold stream-like "
        "population (the default); field, a wide kinematically distinct population without a track prior, not "
        "counted in p_member",
    )

    name: str = Field(
        description="the component's name, an identifier other than background and member; it names its output columns "
        "(p_<name>...) and tracks",
    )
    photometry: bool = Field(
        True,
        description="use the isochrone likelihood when the model has bands; false: the component's magnitudes "
        "follow the background's colour-magnitude density given the astrometry",
    )
    profile: str = Field(
        "gaussian",
        description="the density across the track (streammix.profiles): gaussian; student_t (power-law wings, "
        "fitted phi2_dof); core_wings (a core and wider Gaussian wings, fitted phi2_wing_fraction and "
        "phi2_wing_ratio). Its shape parameters take bounds and init like the others",
    )
    phi1_range: tuple[float, float] | None = Field(
        None,
        description="[low, high] (deg) outside which the component's weight is about zero (null: the whole field)",
    )
    bounds: dict[str, tuple[float, float]] = Field(
        {},
        description="{parameter: [low, high]} in the parameter's unit (deg, mas/yr, mag), replacing the defaults: phi2 "
        "the field's, proper motions the data's 0.5-99.5 percentiles widened, widths 0.01-1, distmod 10-20, "
        "distmod_width 0.005-0.3",
    )
    network: NetworkConfig = Field(
        NetworkConfig(),
        description="size of the network giving the component's parameters as functions of phi1",
    )
    control_points: list[ControlPointConfig] = Field(
        [],
        description="Gaussian priors on the component's tracks; those on phi2 also keep the stars near the track out "
        "of the background flows' training",
    )
    galstreams: GalstreamsPrior | None = Field(
        None,
        description="control points read off a galstreams track (null: none)",
    )
    init: dict[str, float] = Field(
        {},
        description="{parameter: value}, in its unit: constant warm-start targets of parameters without control points "
        "(defaults: phi2_width 0.2 deg, proper-motion widths 0.3 mas/yr, distmod_width 0.1 mag)",
    )
    velocity_dispersion: VelocityDispersionConfig | None = Field(
        None,
        description="a log-normal prior on the component's velocity dispersion in km/s, {median, dex, spacing}, "
        "applied to its proper-motion widths through its own distance (streammix.dispersion): keeps a sparse "
        "stream's widths from running to their lower bound. Needs a distance (parallax or bands). null: none",
    )

    @field_validator("bounds")
    @classmethod
    def _bounds(cls, value: dict[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
        for name, (low, high) in value.items():
            if not low < high:
                raise ValueError(f"{name}: lower bound {low} must be below upper bound {high}")
        return value

    @field_validator("phi1_range")
    @classmethod
    def _phi1_range(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        if value is not None and not value[0] < value[1]:
            raise ValueError(f"lower limit {value[0]} must be below upper limit {value[1]}")
        return value

    @field_validator("profile")
    @classmethod
    def _profile(cls, value: str) -> str:
        if value not in PROFILES:
            raise ValueError(f"unknown cross-track profile {value!r}; choose from {', '.join(sorted(PROFILES))}")
        return value

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not value.isidentifier() or value in ("background", "member"):
            raise ValueError(
                f"'{value}' is not a usable component name (an identifier, not 'background' or 'member')"
            )
        return value

    def default_bounds(self, phi2_range: tuple[float, float], stars) -> dict[str, tuple[float, float]]:
        """Bounds of every parameter this kind may have, before the config's ``bounds``:
        phi2 the field's, proper motions the data's 0.5-99.5 percentiles widened
        (±30 mas/yr without data), widths and distance modulus
        :data:`DEFAULT_WIDTH_BOUNDS`, the profile's shape parameters its own.

        Arguments:
            phi2_range: The field's phi2 limits (deg).
            stars: The stars (a :class:`~streammix.data.StarTable`), or None.
        """
        bounds: dict[str, tuple[float, float]] = dict(DEFAULT_WIDTH_BOUNDS)
        bounds.update({p.name: (p.low, p.high) for p in get_profile(self.profile).parameters})
        bounds["phi2"] = tuple(phi2_range)
        for pm in ("pm_phi1_cosphi2", "pm_phi2"):
            values = getattr(stars, pm) if stars is not None else np.array([])
            finite = values[np.isfinite(values)]
            if finite.size:
                lo, hi = np.percentile(finite, [0.5, 99.5])
                pad = 0.05 * (hi - lo) + 0.1
                bounds[pm] = (float(lo - pad), float(hi + pad))
            else:
                bounds[pm] = (-30.0, 30.0)
        return bounds

    def default_init(self) -> dict[str, float]:
        """Warm-start values of the parameters without control points or ``init``:
        :data:`DEFAULT_INIT` and the profile's."""
        return DEFAULT_INIT | {p.name: p.init for p in get_profile(self.profile).parameters}

    def build(
        self,
        coordinates: Sequence[str],
        bounds: dict[str, tuple[float, float]],
        phi2_range: tuple[float, float],
        *,
        photometry: nn.Module | None = None,
        selection: Any = None,
        parallax_zero_point: float = 0.0,
        cut_stars: str = "all",
    ) -> StreamComponent:
        """The component these settings describe (untrained).

        Arguments:
            coordinates: The model's observed coordinates.
            bounds: Every parameter's ``(low, high)``.
            phi2_range: The field's phi2 limits (deg).
            photometry: The model's isochrone likelihood (used if ``self.photometry``).
            selection: The catalogue's cuts (:class:`~streammix.selection.SelectionCuts`) or None.
            parallax_zero_point: The catalogue's parallax zero-point (mas).
            cut_stars: Which stars ``selection`` divides (:class:`StreamComponent`).

        Example:
            >>> cfg = ComponentConfig(name="spur", network={"hidden": 8})
            >>> comp = cfg.build(["phi2"], cfg.default_bounds((-5.0, 5.0), None), (-5.0, 5.0))
            >>> comp.kind, comp.parameter_names
            ('stream', ('phi2', 'phi2_width'))
        """
        return self.component_class(
            self.name,
            coordinates,
            bounds,
            phi2_range=phi2_range,
            settings=NetworkSettings(**self.network.model_dump()),
            phi1_range=self.phi1_range,
            photometry=photometry if self.photometry else None,
            selection=selection,
            profile=get_profile(self.profile),
            defaults=self.default_init(),
            parallax_zero_point=parallax_zero_point,
            cut_stars=cut_stars,
        )
