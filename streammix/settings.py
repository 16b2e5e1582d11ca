"""The settings sections that several modules share: the base of every
config section (unknown keys forbidden, frozen), a network's size, the
background flows' settings and a component's priors.

:mod:`streammix.config` assembles them, with the other sections, into the
whole configuration; the modules that build a model from them (components,
flows, background blocks) import them from here, below the config.

Example:
    >>> NetworkConfig(hidden=8).layers
    3
    >>> FlowConfig().transforms
    3
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

__all__ = ["BlockSection", "ControlPointConfig", "FlowConfig", "GalstreamsPrior", "NetworkConfig", "Section", "first_error"]


class Section(BaseModel):
    """The base of every config section: unknown keys are an error, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def first_error(
    error: ValidationError, loc: Callable[[tuple], Iterable[Any]] = tuple, *, unknown: str | None = None
) -> tuple[str, str]:
    """The dotted key and the reason of a validation error's first problem, for
    one-line messages (``"(and N more)"`` appended when there are others).

    Arguments:
        error: What pydantic raised.
        loc: Maps the problem's location to the keys to print (e.g. to drop union tags).
        unknown: The reason to give for an unknown key (None: pydantic's own).

    Example:
        >>> try:
        ...     NetworkConfig(hidden=0, layers=0)
        ... except ValidationError as error:
        ...     first_error(error)
        ('hidden', 'Input should be greater than or equal to 1 (and 1 more)')
    """
    first = error.errors()[0]
    key = ".".join(str(k) for k in loc(first["loc"]))
    why = unknown if unknown is not None and first["type"] == "extra_forbidden" else first["msg"]
    why = why.removeprefix("Value error, ")
    more = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
    return key, why + more


class NetworkConfig(Section):
    """Size of one mixture density network."""

    hidden: int = Field(64, ge=1, description="width of each hidden (tanh) layer")
    layers: int = Field(3, ge=1, description="number of hidden layers")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="MC dropout; > 0 widens the fitted widths")


class FlowConfig(Section):
    """Settings of the background's conditional normalizing flows."""

    backend: Literal["zuko", "nflows"] = Field(
        "zuko",
        description="the flow library: zuko (neural spline flows) or nflows (masked autoregressive rational-quadratic "
        "splines; needs the optional nflows package)",
    )
    transforms: int = Field(3, ge=1, description="spline transforms in each flow")
    hidden: int = Field(32, ge=1, description="width of the hidden layers of each transform's conditioner network")
    layers: int = Field(2, ge=1, description="hidden layers of each transform's conditioner network")
    bins: int = Field(8, ge=2, description="spline bins of each transform")
    epochs: int = Field(60, ge=1, description="most passes over the training stars (see also max_steps and patience)")
    max_steps: int | None = Field(
        6000,
        ge=1,
        description="gradient steps in all, whatever the epochs (None: no limit); only fields of more than about "
        "400,000 training stars reach it. On 10^6 stars a cap of 2,000 left the photometric flow too smooth and the "
        "joint fit lost the stream; 6,000 recovered it",
    )
    batch_size: int = Field(4096, ge=1, description="training stars per gradient step")
    learning_rate: float = Field(
        3e-3,
        gt=0,
        description="AdamW learning rate, halved whenever the held-out loss stalls for about a third of patience "
        "epochs",
    )
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay")
    validation_fraction: float = Field(
        0.1,
        ge=0,
        lt=1,
        description="fraction of the training stars held out to keep the best epoch's weights and stop early (0: "
        "none; training runs all its epochs and keeps the last weights)",
    )
    patience: int = Field(
        10,
        ge=1,
        description="epochs without improvement of the held-out loss before training stops (the best weights are kept)",
    )
    stopping_k: float = Field(
        0.0,
        ge=0,
        description="an epoch improves only when its held-out loss falls by more than this many paired standard "
        "errors over the held-out stars (0: any fall of the mean; streammix.training.EarlyStopping)",
    )
    averaging: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="decay per step of an exponential moving average of the flow's weights, which is what is "
        "validated and kept (0: the last step's weights)",
    )
    rare_pattern_stars: int | None = Field(
        16384,
        ge=2,
        description="flow blocks: the fewest stars a flow that only the stars of its own pattern of observed "
        "coordinates use (e.g. the stars without BP and RP) trains on: it trains on a random subsample of the stars "
        "observing its coordinates as large as the number of training stars having exactly that pattern, or this "
        "many where that is more (at least the block's fewest, 50; less its held-out validation_fraction), so its "
        "cost grows with the stars it serves rather than with the field; the flows of the full block and of the "
        "marginals the mixtures use for every star (the astrometric one) train on all (null: every flow on all "
        "its stars). On the demo's field "
        "the flows took 40 % less time, their own test stars' mean log-density moving by -0.022 +- 0.015 (stars "
        "without BP and RP), +0.003 +- 0.015 (no astrometry) and +0.024 +- 0.043 (G alone, 3 test stars) nats "
        "(benchmarks/RESULTS.md, session 35)",
    )
    grow_from: int | None = Field(
        None,
        ge=2,
        description="train each flow on a growing random subsample of its training stars: first this many, then "
        "afresh on twice as many, and so on up to all of them (streammix.flows.growth_sizes), while a growth lowers "
        "the loss of one fixed set of held-out stars by more than its paired standard error; the lower of the last two is "
        "kept and its stopped_because says how many stars it learnt from (null: every training star at once; flow "
        "blocks only; needs validation_fraction > 0). A subsample gets epochs passes over itself, so fewer gradient "
        "steps: where a field's flows still improve at their last epoch every growth pays, and the growth reaches "
        "every star having also trained the smaller flows (1.4 to 1.9 times the flows' time on the demo and GD-1, "
        "benchmarks/RESULTS.md session 12), which is why it is off by default",
    )

    @model_validator(mode="after")
    def _grow_needs_held_out(self) -> FlowConfig:
        if self.grow_from is not None and self.validation_fraction == 0:
            raise ValueError("grow_from: needs held-out stars (validation_fraction > 0) to judge a growth")
        return self


class ControlPointConfig(Section):
    """The ``parameter`` track passes within ``width`` of ``value`` at ``phi1``."""

    parameter: str = Field(
        description="the component's parameter: phi2, pm_phi1_cosphi2, pm_phi2, distmod or a width such as phi2_width "
        "(one the model has; checked when the fit starts)",
    )
    phi1: float = Field(description="where along the stream (deg)")
    value: float = Field(description="the value expected there, in the parameter's unit (deg, mas/yr, mag)")
    width: float = Field(gt=0, description="standard deviation of the Gaussian prior, in the parameter's unit")


class GalstreamsPrior(Section):
    """Control points read off a galstreams track."""

    name: str = Field(description="the stream's name in galstreams (case and punctuation ignored: gd1 finds GD-1)")
    reference: str | None = Field(
        None,
        description="which of its tracks, e.g. pricewhelan2018 (null: the one galstreams switches on, else the most "
        "recent)",
    )
    parameters: list[str] = Field(
        ["phi2"],
        description="the track's quantities made into control points, among phi2, pm_phi1_cosphi2, pm_phi2 and distmod "
        "(points where the track has none are skipped)",
    )
    spacing: float = Field(10.0, gt=0, description="deg between control points")
    widths: dict[str, float] = Field(
        {"phi2": 0.5, "pm_phi1_cosphi2": 1.0, "pm_phi2": 1.0, "distmod": 0.3},
        description="width of each parameter's control points, in its unit (deg, mas/yr, mag); every one of parameters "
        "needs one",
    )


class BlockSection(Section):
    """The base of every background block kind's settings: its ``coordinates``
    (each once) and its own ``flow`` settings, which replace the background's.
    A kind declares both fields with its own descriptions."""

    @field_validator("coordinates", check_fields=False)
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError(f"{value}: a coordinate is listed twice")
        return value

    def settings(self, shared: FlowConfig) -> FlowConfig:
        """The block's settings: its own ``flow``, else the background's ``shared`` ones."""
        return self.flow if self.flow is not None else shared
