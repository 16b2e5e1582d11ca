"""One YAML file describes a stream: data, frame, field, components, priors, fit.

Every section is a pydantic model that forbids unknown keys, so a typo or a
wrong type is reported as one line naming the key, e.g.
``config 'gd1.yaml': model.components.0.bounds.phi2: Input should be a valid list``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BeforeValidator, Discriminator, Field, Tag, ValidationError, field_validator, model_validator

from .band_transforms import BAND_TRANSFORMS
from .blocks import FlowBlockConfig
from .components import ComponentConfig
from .data import ColumnMap
from .errors import InputError
from .field_population import FieldComponentConfig
from .gaussian_mixture import GaussianMixtureBlockConfig
from .overrides import apply_overrides, parse_overrides
from .settings import ControlPointConfig, FlowConfig, GalstreamsPrior, NetworkConfig, first_error
from .settings import Section as _Section

__all__ = [
    "BLOCK_KINDS",
    "COMPONENT_KINDS",
    "BackgroundConfig",
    "BlockEntry",
    "ComponentEntry",
    "ComponentConfig",
    "Config",
    "ControlPointConfig",
    "DataConfig",
    "FieldConfig",
    "FitConfig",
    "FrameConfig",
    "FlowConfig",
    "GaiaQueryConfig",
    "GalstreamsPrior",
    "IsochroneConfig",
    "ModelConfig",
    "NetworkConfig",
    "SelectionConfig",
]

COORDINATES = ("phi2", "parallax", "pm_phi1_cosphi2", "pm_phi2")


def _kinds(*classes: type[_Section]) -> MappingProxyType[str, type[_Section]]:
    return MappingProxyType({cls.model_fields["kind"].default: cls for cls in classes})


#: The component kinds: ``kind:`` in ``model.components`` -> its settings class,
#: which builds the component. The first is the default of an entry without ``kind``.
COMPONENT_KINDS: MappingProxyType[str, type[_Section]] = _kinds(ComponentConfig, FieldComponentConfig)

#: The background block kinds: ``kind:`` in ``model.background.blocks`` -> its settings
#: class, which trains the block's density and reads it back. The first is the default.
BLOCK_KINDS: MappingProxyType[str, type[_Section]] = _kinds(FlowBlockConfig, GaussianMixtureBlockConfig)


def _kind_union(registry: Mapping[str, type[_Section]], what: str, before=None) -> Any:
    """A pydantic union over ``registry``'s classes chosen by ``kind`` (a missing one: the first).

    Example:
        >>> from pydantic import TypeAdapter
        >>> entry = TypeAdapter(_kind_union(BLOCK_KINDS, "background block", _block_from_list))
        >>> entry.validate_python(["parallax"]).kind, entry.validate_python({"kind": "gaussian_mixture",
        ...                                                                  "coordinates": ["x"]}).kind
        ('flow', 'gaussian_mixture')
    """
    default = next(iter(registry))

    def kind_of(value: Any) -> str:
        return value.get("kind", default) if isinstance(value, dict) else getattr(value, "kind", default)

    def known(value: Any) -> Any:
        if before is not None:
            value = before(value)
        kind = kind_of(value)
        if not isinstance(kind, str) or kind not in registry:
            raise ValueError(f"kind {kind!r}: not a {what} kind; choose from {', '.join(registry)}")
        return value

    members = tuple(Annotated[cls, Tag(kind)] for kind, cls in registry.items())
    return Annotated[Annotated[Union[members], Discriminator(kind_of)], BeforeValidator(known)]  # noqa: UP007


def _block_from_list(value: Any) -> Any:
    """A block given as a list of coordinates (the form before blocks had kinds) is a flow block."""
    if isinstance(value, (list, tuple)):
        return {"kind": "flow", "coordinates": list(value)}
    return value


#: One entry of ``model.components``: the settings of one of :data:`COMPONENT_KINDS`.
ComponentEntry = _kind_union(COMPONENT_KINDS, "component")
#: One entry of ``model.background.blocks``: the settings of one of :data:`BLOCK_KINDS`.
BlockEntry = _kind_union(BLOCK_KINDS, "background block", _block_from_list)


class FrameConfig(_Section):
    """A stream frame given by its great circle: the pole and the point where phi1 = 0
    (:func:`streammix.frames.great_circle_frame`), for streams without a built-in frame.

    Example:
        >>> FrameConfig(name="toy", pole=(0.0, 90.0), origin=(30.0, 0.0)).origin
        (30.0, 0.0)
    """

    name: str = Field("great circle", description="the frame's name (the stream's), recorded with its tables")
    pole: tuple[float, float] = Field(description="[ra, dec] (deg, ICRS) of the great circle's pole, where phi2 = +90")
    origin: tuple[float, float] = Field(
        description="[ra, dec] (deg, ICRS) of the point that fixes phi1 = 0, projected onto the great circle"
    )

    @model_validator(mode="after")
    def _on_sky(self) -> FrameConfig:
        for key in ("pole", "origin"):
            if not -90.0 <= getattr(self, key)[1] <= 90.0:
                raise ValueError(f"{key}: dec {getattr(self, key)[1]} is not within [-90, 90]")
        return self


class IsochroneConfig(_Section):
    """The stream's isochrone and how its photometric likelihood is computed.

    ``path`` None takes the embedded PARSEC grid (:func:`streammix.isochrone.default_grid`)
    at ``age`` and ``feh``; otherwise a MIST (``.iso.cmd``) or PARSEC file: one
    holding an (age, [Fe/H]) grid of four or more isochrones is interpolated to
    ``age`` and ``feh``, any other gives the isochrone closest to them.
    """

    path: str | None = Field(
        None,
        description="a MIST (.iso.cmd) or PARSEC isochrone file, relative to the config file's folder (null: the "
        "embedded PARSEC v1.2S grid, 6.9-15.8 Gyr and [Fe/H] -2.19 to -0.45)",
    )
    band_transform: str | None = Field(
        None,
        description="a published colour transformation adding bands the isochrone lacks (null: none): "
        "finkbeiner2016 gives PS1 g, r, i from SDSS g, r, i (Finkbeiner et al. 2016, Table 2), e.g. for the "
        "embedded PARSEC grid; tonry2012 gives them from Johnson-Cousins B, V, I_C (Tonry et al. 2012, Table 6), "
        "e.g. for a MIST UBV(RI)c file",
    )
    reddening: float = Field(
        0.0,
        ge=0,
        allow_inf_nan=False,
        description="foreground E(B-V) (mag) reddening the isochrone, A_band = R_band E(B-V) (Schlafly & Finkbeiner "
        "2011; streammix.extinction), for catalogues without extinction columns (0: none); added to any per-star "
        "extinction",
    )
    format: Literal["auto", "mist", "parsec"] = Field(
        "auto",
        description="the file's format (auto: mist if its name ends in .cmd or contains mist, else parsec)",
    )
    age: float = Field(12.0, gt=0, description="Gyr")
    feh: float = Field(-1.5, description="metallicity [Fe/H] (dex)")
    mass_function: Literal["kroupa", "salpeter", "power_law", "tabulated"] = Field(
        "kroupa",
        description="initial mass function weighting the isochrone: kroupa, salpeter, power_law (of power_law_slope) "
        "or tabulated (from mass_function_table)",
    )
    power_law_slope: float = Field(2.35, description="alpha of dN/dm ~ m^-alpha (power_law)")
    mass_function_table: str | None = Field(None, description="file of mass and dN/dm columns (tabulated)")
    phases: list[str] | None = Field(
        None,
        description="evolutionary phases modelled: names (MS, SGB, RGB, CHEB...) or groups (main_sequence, "
        "giant_branch, horizontal_branch, asymptotic_giant_branch) (null: the main sequence, giant and horizontal "
        "branches the isochrone has)",
    )
    magnitude_limits: dict[str, tuple[float, float]] = Field(
        {},
        description="apparent magnitude limits of the catalogue, {band: [bright, faint]} (mag): the likelihood is "
        "normalised within those of limit_band (empty: no truncation)",
    )
    limit_band: str | None = Field(
        None,
        description="the band of magnitude_limits whose limits truncate the likelihood, needed when it lists several "
        "(the others are not used) (null: its only band)",
    )
    limit_error: float | None = Field(
        None,
        ge=0,
        description="photometric error (mag) assumed at the magnitude limits (null: each star's own error in "
        "limit_band)",
    )
    colour_spread: float = Field(
        0.0,
        ge=0,
        description="intrinsic colour spread of the stream's stars (mag): each band gets an extra variance of "
        "colour_spread^2 / 2 (0: none)",
    )
    outlier_fraction: float = Field(
        0.0,
        ge=0,
        lt=1,
        allow_inf_nan=False,
        description="the share of a component's stars that the isochrone does not describe (blue stragglers, "
        "horizontal-branch and variable stars, blends, bad photometry): their magnitudes follow the field's "
        "colour-magnitude density given their astrometry, as a component without an isochrone's do (0: every star "
        "on the isochrone)",
    )
    nodes: int = Field(
        200,
        ge=2,
        description="segments of the isochrone in the quadrature over initial mass (those of zero mass-function weight "
        "are dropped); more is more exact and slower",
    )

    @field_validator("band_transform")
    @classmethod
    def _known_transform(cls, value: str | None) -> str | None:
        if value is not None and value not in BAND_TRANSFORMS:
            raise ValueError(f"{value!r} is not one of {sorted(BAND_TRANSFORMS)}")
        return value

    @model_validator(mode="after")
    def _table(self) -> IsochroneConfig:
        if self.mass_function == "tabulated" and self.mass_function_table is None:
            raise ValueError("mass_function 'tabulated' needs mass_function_table")
        return self


class BackgroundConfig(_Section):
    """The background: flows on blocks of coordinates, and a phi2 density."""

    phi2: Literal["uniform", "exponential"] = Field(
        "exponential",
        description="the background's density in phi2 over the field: uniform, or exponential with a slope (at most 1 "
        "per deg) that varies with phi1",
    )
    blocks: list[BlockEntry] = Field(
        [FlowBlockConfig(coordinates=["parallax", "pm_phi1_cosphi2", "pm_phi2"])],
        description="the background's blocks, a product of densities over blocks of coordinates: each "
        "{kind, coordinates, flow} (kind flow, the default: conditional normalizing flows; gaussian_mixture: a "
        "conditional Gaussian mixture; flow: settings replacing the shared ones below for this block), or just "
        "the list of coordinates of a flow block. A block may mix bands and "
        "astrometry (its density then links the colour-magnitude diagram to the proper motions and parallax); "
        "a joint model's astrometry-only stage uses its astrometric marginal. A field star's distance sets both "
        "its astrometry and its magnitudes: on the default mock one block of all six (the demo's) took about "
        "twice as long to train as the two separate blocks and removed a 0.12-0.17 overestimate of the "
        "membership log-odds that the product of the two left (benchmarks/calibration.py)",
    )
    flow: FlowConfig = Field(
        FlowConfig(), description="settings of the background's conditional normalizing flows (a block's own flow "
        "replaces them for that block)"
    )
    error_context: bool = Field(
        False,
        description="condition the flows of blocks without bands on the log measurement errors of their "
        "coordinates, p(x | phi1, ln err): a faint star's parallax is judged against stars measured as poorly",
    )
    phi2_context: bool = Field(
        False,
        description="condition every block's flows on phi2 as well as phi1, p(x | phi1, phi2): a field's proper "
        "motions and parallaxes change across the stream (on the GD-1 field the median pm_phi2 of off-stream stars "
        "changes by about 1 mas/yr over 11 deg of phi2), which flows of phi1 alone average out",
    )
    offstream_phi2: float = Field(1.0, gt=0, description="deg from the prior track beyond which stars train the flows")
    limits: dict[str, tuple[float | None, float | None]] = Field(
        {},
        description="hard limits the catalogue was cut on, {coordinate: [low, high]} (null for an open side), e.g. "
        "{gaia_g: [null, 20.5]}: the flows model those coordinates inside the limits only, so their density does not "
        "leak past the cut (a flow on raw G put 23 % too few stars in the last 0.1 mag of the default mock). Every "
        "star must lie within them",
    )
    locus: list[str] | None = Field(
        None,
        description="three bands [magnitude, blue, red] of one block, e.g. [gaia_g, gaia_bp, gaia_rp]: the flows "
        "see the magnitude, the colour blue - red and the residual of magnitude - red from the field's median "
        "colour-colour relation in units of its spread, so they resolve the thin stellar locus (on the default "
        "mock the raw flow's density on it was several times too low, which made photometric memberships "
        "over-confident)",
    )


class ModelConfig(_Section):
    """The mixture."""

    coordinates: list[str] = Field(
        list(COORDINATES),
        description="the observed coordinates modelled as functions of phi1, among phi2, parallax, pm_phi1_cosphi2 and "
        "pm_phi2",
    )
    bands: list[str] = Field(
        [],
        description="canonical bands of the isochrone likelihood, e.g. [gaia_g, gaia_bp, gaia_rp]: two or more, each "
        "in a background block (empty: no photometry)",
    )
    isochrone: IsochroneConfig = Field(
        IsochroneConfig(),
        description="the stream's isochrone and its photometric likelihood (used with bands)",
    )
    grid_size: int = Field(
        256,
        ge=8,
        description="points of the phi1 grid over the field on which the networks are evaluated, interpolated linearly "
        "to each star",
    )
    components: list[ComponentEntry] = Field(
        [ComponentConfig(name="stream")],
        description="the stream-like components (stream, spur, cocoon...), each with its own tracks and weight; "
        "kind (default stream) chooses its type among streammix.config.COMPONENT_KINDS",
    )
    weights_network: NetworkConfig = Field(
        NetworkConfig(),
        description="size of the network giving the components' weights as functions of phi1",
    )
    initial_fraction: float = Field(
        0.02,
        gt=0,
        lt=0.5,
        description="starting weight of each stream-like component at every phi1 (the background has the rest)",
    )
    error_weights: int = Field(
        0,
        ge=0,
        le=64,
        description="knots of a per-component logit in the log parallax error added to the phi1 weights (0: off, "
        "else at least 3): the stream's stars and the field's are measured differently well, and where the "
        "magnitudes are not modelled (astrometry, stars without photometry) the error is a proxy of brightness "
        "(streammix.error_weights)",
    )
    error_density: bool = Field(
        False,
        description="for the stars without photometry in a model with bands, multiply the density of each "
        "stream-like component with an isochrone by the ratio of its density of the parallax error (its luminosity "
        "function through the catalogue's error-magnitude relation) to the field's (streammix.error_density), "
        "and for the stars with photometry by the share of the field's stars with it at their parallax error over "
        "the share overall (streammix.photometry_share); replaces error_weights, which must be 0",
    )
    photometry_share: bool = Field(
        False,
        description="beside learned error_weights, multiply the density of each stream-like component with an "
        "isochrone, for the stars with photometry, by the share of the field's stars with it at their parallax "
        "error over that share's mean under the component's luminosity function at its distance "
        "(streammix.photometry_share): which stars have photometry depends on their brightness; error_density "
        "applies its own form",
    )
    photometry_logits: bool = Field(
        False,
        description="a learned constant logit per stream-like component for the stars whose magnitudes the model "
        "uses (under a weak N(0, 3^2) prior; streammix.mixture.Mixture): which stars have photometry depends on "
        "their brightness, and the stream's share among them is learned from them rather than tied to that of the "
        "other stars (a star of median error, with error_weights) through the normalisation of their densities "
        "over the catalogue's cuts; needs bands and a component with photometry, and not the "
        "luminosity_function form; the weights reported on the phi1 grid (tracks, the membership table's weight "
        "and linear density) stay those of the stars without magnitudes",
    )
    cut_normalisation: Literal[
        "star", "stars_without_photometry", "luminosity_function_with_photometry", "luminosity_function", "none"
    ] = Field(
        "star",
        description="with data.selection, how the model is normalised over the catalogue's cuts: 'star', each "
        "stream-like component divided by each star's own probability of passing them (with a prior keeping it "
        "inside them); 'stars_without_photometry', the same for the stars whose magnitudes the model does not use "
        "only, without that prior (needs bands; the stars with magnitudes hold the components inside the cuts, and "
        "for them the luminosity function, cut by the magnitude limits, stands in for the cuts' loss of faint "
        "stars); 'luminosity_function_with_photometry', the stars without photometry divided as by "
        "'stars_without_photometry' and each star with photometry by the share of the component's stars at its phi1 "
        "that pass the cuts, averaged over the component's luminosity function (streammix.cut_fraction), so that "
        "the component is a density over the cuts for both kinds of star, which share its weights over phi1 (needs "
        "bands, a component with photometry, isochrone.magnitude_limits and no error_density; with a proper-motion "
        "cut, the 'star' form's prior keeps each component inside it); 'luminosity_function', the mixture "
        "divided by the share of each component's stars that pass, averaged over its luminosity function "
        "(streammix.cut_fraction; needs error_density); 'none', the stream-like components not normalised, the "
        "background flows alone seeing the cuts (observed pmra, pmdec and parallax, bounded by them)",
    )
    background: BackgroundConfig = Field(
        BackgroundConfig(),
        description="the background: flows on blocks of coordinates, and a phi2 density",
    )
    member_components: list[str] | None = Field(
        None,
        description="the components a member of the stream may belong to: p_member is the sum of their "
        "probabilities (None: every component whose kind is a member kind, e.g. stream + spur + cocoon of kind "
        "stream, not one of kind field)",
    )

    @field_validator("coordinates")
    @classmethod
    def _coordinates(cls, value: list[str]) -> list[str]:
        unknown = [c for c in value if c not in COORDINATES]
        if unknown:
            raise ValueError(f"unknown coordinate(s) {unknown}; choose from {list(COORDINATES)}")
        if not value:
            raise ValueError("at least one coordinate is needed")
        return value

    @model_validator(mode="after")
    def _unique(self) -> ModelConfig:
        names = [c.name for c in self.components]
        if len(set(names)) != len(names):
            raise ValueError(f"component names must be unique, got {names}")
        if not names:
            raise ValueError("at least one stream-like component is needed")
        if self.member_components is not None:
            unknown = [c for c in self.member_components if c not in names]
            if unknown or not self.member_components:
                raise ValueError(f"member_components: {unknown or '[]'} must be among the components {names}")
        if self.initial_fraction * len(names) >= 1:
            raise ValueError(
                f"initial_fraction {self.initial_fraction}: the {len(names)} stream-like components would start with "
                "all the weight (the fraction times the number of components must be below 1)"
            )
        for k, comp in enumerate(self.components):
            if getattr(comp, "velocity_dispersion", None) is None:
                continue
            distance = "parallax" in self.coordinates or (bool(self.bands) and comp.photometry)
            if not distance or not {"pm_phi1_cosphi2", "pm_phi2"} & set(self.coordinates):
                raise ValueError(
                    f"components.{k}.velocity_dispersion: {comp.name} needs proper motions and a distance "
                    "(parallax among the coordinates, or bands with photometry)"
                )
        if self.error_weights and (self.error_weights < 3 or "parallax" not in self.coordinates):
            raise ValueError(
                f"error_weights {self.error_weights}: needs at least 3 knots and parallax among the coordinates (0: off)"
            )
        if self.error_density and (
            "parallax" not in self.coordinates or not self.bands or not any(c.photometry for c in self.components)
        ):
            raise ValueError(
                "error_density: needs parallax among the coordinates, bands, and a component with photometry "
                "(it models the parallax errors of the stars without photometry from the isochrone)"
            )
        if self.error_density and self.error_weights:
            raise ValueError(
                f"error_density: error_weights is {self.error_weights}; it must be 0 (the modelled density of the "
                "error replaces the learned weights: with both, the mixture is not a normalised density)"
            )
        if self.photometry_share:
            if self.error_density:
                raise ValueError(
                    "photometry_share: error_density is true, which applies its own form of the share; set one of them"
                )
            missing = [
                need
                for need, present in (
                    ("error_weights (the term is that of the stars with photometry beside the learned weights)",
                     self.error_weights),
                    ("bands", self.bands),
                    ("a component with photometry", any(c.photometry for c in self.components)),
                    ("isochrone.magnitude_limits (the luminosity function it is averaged over)",
                     self.isochrone.magnitude_limits),
                )
                if not present
            ]  # fmt: skip
            if missing:
                raise ValueError(f"photometry_share: needs {'; '.join(missing)}")
        if self.photometry_logits and (not self.bands or not any(c.photometry for c in self.components)):
            raise ValueError(
                "photometry_logits: needs bands and a component with photometry (without them no star's magnitudes "
                "are modelled)"
            )
        if self.photometry_logits and self.cut_normalisation == "luminosity_function":
            raise ValueError(
                "photometry_logits: cut_normalisation is luminosity_function, whose normaliser has the weights of "
                "the stars without magnitudes only; choose another form"
            )
        divides_without = ("stars_without_photometry", "luminosity_function_with_photometry")
        if self.cut_normalisation in divides_without and not self.bands:
            raise ValueError(
                f"cut_normalisation {self.cut_normalisation}: needs bands (without them no star has photometry; "
                "use 'star')"
            )
        if self.cut_normalisation == "luminosity_function_with_photometry":
            missing = [
                need
                for need, present in (
                    ("isochrone.magnitude_limits (the luminosity function the share that passes is averaged over)",
                     self.isochrone.magnitude_limits),
                    ("a component with photometry (without one, use 'stars_without_photometry')",
                     any(c.photometry for c in self.components)),
                    ("error_density: false (with it the stars without photometry carry the luminosity function "
                     "before the cuts: use 'luminosity_function')", not self.error_density),
                )
                if not present
            ]  # fmt: skip
            if missing:
                raise ValueError(f"cut_normalisation luminosity_function_with_photometry: needs {'; '.join(missing)}")
        if self.cut_normalisation == "luminosity_function":
            if not self.error_density:
                raise ValueError(
                    "cut_normalisation luminosity_function: needs error_density: true (the stars without photometry "
                    "must carry the luminosity function before the cuts)"
                )
            without = [c.name for c in self.components if not c.photometry]
            if without:
                raise ValueError(
                    f"cut_normalisation luminosity_function: components {without} have no isochrone (photometry: "
                    "false), so their share that passes the cuts is unknown"
                )
        if self.isochrone.outlier_fraction > 0 and not (self.bands and any(c.photometry for c in self.components)):
            raise ValueError(
                "isochrone.outlier_fraction: needs bands and a component with photometry (it is the share of such a "
                "component's stars off its isochrone)"
            )
        if self.error_density and not self.isochrone.magnitude_limits:
            raise ValueError(
                "error_density: needs isochrone.magnitude_limits (without them the luminosity function runs to the "
                "isochrone's faintest star)"
            )
        if len(self.bands) == 1:
            raise ValueError(f"bands {self.bands}: the isochrone likelihood needs two or more bands")
        if len(set(self.bands)) != len(self.bands):
            raise ValueError(f"bands {self.bands}: a band is listed twice")
        for block in self.background.blocks:
            extra = [c for c in block.coordinates if c not in self.coordinates and c not in self.bands]
            if extra:
                raise ValueError(
                    f"background block {block.coordinates} uses {extra}, not among the model's coordinates or bands"
                )
        modelled = {c for block in self.background.blocks for c in block.coordinates}
        missing = [b for b in self.bands if b not in modelled]
        if missing:
            raise ValueError(
                f"bands {missing}: no background block models them, so the background and the stream "
                f"would describe different magnitudes (add a block such as {self.bands})"
            )
        unknown = [b for b in self.isochrone.magnitude_limits if b not in self.bands]
        if unknown:
            raise ValueError(f"isochrone.magnitude_limits: bands {unknown} are not among the model's bands {self.bands}")
        for name, (low, high) in self.background.limits.items():
            if name not in modelled:
                raise ValueError(f"background.limits: {name!r} is in no background block")
            if low is not None and high is not None and not low < high:
                raise ValueError(f"background.limits: {name!r} low {low} must be below high {high}")
        for i, block in enumerate(self.background.blocks):
            limited = [c for c in block.coordinates if c in self.background.limits]
            if limited and not block.limits_allowed:
                raise ValueError(
                    f"background.blocks.{i}: a {block.kind} block cannot honour limits, and background.limits has "
                    f"{limited} (model them in a flow block)"
                )
        locus = self.background.locus
        if locus is not None:
            if len(locus) != 3 or len(set(locus)) != 3:
                raise ValueError(f"background.locus: {locus} must be three distinct bands [magnitude, blue, red]")
            if any(b not in self.bands for b in locus):
                raise ValueError(f"background.locus: {locus} are not all among the model's bands {self.bands}")
            if not any(set(locus) <= set(block.coordinates) for block in self.background.blocks if block.locus_allowed):
                raise ValueError(f"background.locus: no background block that takes a locus (kind flow) holds all of {locus}")
            limited = [b for b in locus[1:] if b in self.background.limits]
            if limited:
                raise ValueError(f"background.locus: its colour bands {limited} cannot have limits (only its magnitude)")
        return self


def _workers(value: Any) -> Any:
    """``fit.workers``: 'auto' is one process per CPU core this process may run on (its
    affinity: a batch job's allotted cores, not the node's)."""
    if value == "auto":
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if isinstance(value, str) and not value.strip().lstrip("+").isdigit():
        raise ValueError(f"{value!r} is not a whole number >= 1 or 'auto'")
    return value


class FitConfig(_Section):
    """How the mixture is fitted."""

    optimizer: Literal["adamw", "lbfgs"] = Field(
        "adamw",
        description="adamw (with warm-up and cosine decay) or lbfgs (strong-Wolfe line search, up to 20 iterations in "
        "each of steps / 20 steps; learning_rate, weight_decay and warmup_steps do not apply)",
    )
    steps: int = Field(
        1500,
        ge=1,
        description="most optimizer steps of each member's fit (after astrometry_steps in a joint model); it stops "
        "earlier after patience steps without held-out improvement",
    )
    learning_rate: float = Field(
        5e-3,
        gt=0,
        description="AdamW peak learning rate, decaying to zero along a cosine over each stage's steps (halved after a "
        "step with a non-finite loss)",
    )
    weight_decay: float = Field(1e-4, ge=0, description="AdamW weight decay")
    batch_size: int | None = Field(
        16384,
        ge=1,
        description="training stars per step, drawn afresh each step (None: all of them). Fields smaller than "
        "this are fitted full-batch; on larger ones a step costs the same whatever their size, and the noise "
        "helps the fit out of a broad-stream local optimum that full-batch steps were seen to stay in",
    )
    validation_fraction: float = Field(
        0.1,
        gt=0,
        lt=1,
        description="fraction of the stars each member holds out at random, to keep its best step and stop early",
    )
    eval_every: int = Field(
        25,
        ge=1,
        description="steps between evaluations of the held-out loss, which keep the best state and count towards "
        "patience",
    )
    patience: int = Field(300, ge=1, description="steps without held-out improvement before stopping")
    stopping_k: float = Field(
        0.0,
        ge=0,
        description="an evaluation improves only when its held-out loss falls by more than this many paired standard "
        "errors over the held-out stars (0: any fall of more than 1e-6 nats per star; streammix.training)",
    )
    cooldown_steps: int = Field(
        0,
        ge=0,
        description="when patience runs out, go on for this many steps while the learning rate falls to 0 (a cosine), "
        "then stop (0: stop at once); the state of a fit stopped at a high learning rate still wanders",
    )
    stopping_weighted: bool = Field(
        False,
        description="weigh each held-out star's change of loss by its membership probability when judging an "
        "improvement (the stream's stars, not the field's, decide when to stop)",
    )
    warm_start_steps: int = Field(
        300,
        ge=0,
        description="Adam steps that first pull each component's networks to its control-point tracks and init values "
        "(0: none)",
    )
    warmup_steps: int = Field(
        100,
        ge=0,
        description="AdamW: each training stage's learning rate rises linearly over its first steps (0: none). "
        "Without it the joint stage of a 5,500-star mock began with full-size steps from a fresh optimizer, "
        "jumped to a distance-modulus track 4 mag off and stayed there",
    )
    astrometry_steps: int = Field(
        500,
        ge=0,
        description="joint models: steps fitted on the astrometry alone (against the background's astrometric "
        "marginal) before the isochrone terms join; they find the thin stream, which the joint fit then refines "
        "(from the start, the stream component was seen to absorb halo stars on the same isochrone)",
    )
    seed: int = Field(
        0,
        description="random seed: member k uses seed + k (split, resample, initialisation, batches); it also seeds the "
        "background flows",
    )
    ensemble: int = Field(
        4,
        ge=1,
        description="mixtures fitted, with different seeds and splits; the membership and track percentiles are over "
        "them",
    )
    bootstrap: bool = Field(
        True,
        description="members after the first train on a bootstrap resample of their training stars (false: only the "
        "seed and split differ)",
    )
    cross_fit: bool = Field(
        False,
        description="cross-fitted memberships: the stars are dealt into `ensemble` folds (or cross_fit_folds) by "
        "source_id (streammix.folds); member m trains on the other folds and holds out fold m (its held-out stars "
        "for stopping), and each star's p_<component> is that of the member that did not train on it (the mean of "
        "those that did not, with cross_fit_folds), so no star pulls the tracks towards itself (bootstrap does not "
        "apply)",
    )
    cross_fit_folds: int | None = Field(
        None,
        ge=2,
        description="cross_fit: the number of folds (None: one per member, `ensemble`). Member m holds out fold "
        "m mod cross_fit_folds, and each star's p_<component> is the mean over the members that held its fold out "
        "(ensemble / cross_fit_folds of them, with different seeds, when the folds divide the ensemble; else the "
        "first folds get one more): the mean halves the variance of a star's p over two fits (on injections into "
        "the GD-1 field it did not change the calibration, benchmarks/RESULTS.md session 18)",
    )
    dropout_samples: int = Field(
        16,
        ge=0,
        description="MC-dropout draws per member added to the membership and track percentiles (none when no network "
        "has dropout)",
    )
    device: str = Field(
        "cpu",
        description="torch device of the mixtures and the background flows, cpu or e.g. cuda (off the CPU the members "
        "are fitted one at a time)",
    )
    workers: Annotated[int, BeforeValidator(_workers)] = Field(
        1,
        ge=1,
        description="processes fitting ensemble members, and a background block's flows, at once (CPU, "
        "spawned once per fit for both, and kept by `streammix fit` to draw its figures: a calling "
        "script needs the `if __name__ == '__main__':` guard); 'auto': one "
        "per CPU core the process may use (a batch job's allotted cores; read when the config is, and written as that "
        "number)",
    )
    dtype: Literal["float32", "float64"] = Field(
        "float32",
        description="floating-point precision of the mixtures (the background flows train in float32)",
    )
    checkpoint_every: int = Field(
        100,
        ge=1,
        description="steps between checkpoints of each member's fit, when it has a checkpoint folder (the fit "
        "command's), from which a rerun resumes",
    )

    @model_validator(mode="after")
    def _folds(self) -> FitConfig:
        if self.cross_fit and self.ensemble < 2:
            raise ValueError(f"cross_fit: needs ensemble >= 2 (one member per fold), got ensemble {self.ensemble}")
        if self.cross_fit_folds is not None:
            if not self.cross_fit:
                raise ValueError("cross_fit_folds: applies to cross_fit only, which is false")
            if self.cross_fit_folds > self.ensemble:
                raise ValueError(
                    f"cross_fit_folds: {self.cross_fit_folds} folds need at least as many members, got ensemble "
                    f"{self.ensemble}"
                )
        return self

    @property
    def folds(self) -> int:
        """The number of cross-fitting folds: ``cross_fit_folds``, or one per member."""
        return self.cross_fit_folds if self.cross_fit_folds is not None else self.ensemble


class FieldConfig(_Section):
    """The field's limits in the stream frame (deg)."""

    phi1: tuple[float, float] = Field(
        description="[low, high] along the stream (deg): the range of the networks' phi1 grid; stars outside it are an "
        "error unless data.cut_to_field",
    )
    phi2: tuple[float, float] = Field(
        description="[low, high] across the stream (deg): the phi2 densities are truncated to it, and it is the phi2 "
        "tracks' default bounds; stars outside it are an error unless data.cut_to_field",
    )

    @model_validator(mode="after")
    def _ordered(self) -> FieldConfig:
        for name in ("phi1", "phi2"):
            lo, hi = getattr(self, name)
            if not hi > lo:
                raise ValueError(f"{name}: upper limit {hi} must exceed lower limit {lo}")
        return self


class SelectionConfig(_Section):
    """The cuts on observed quantities the catalogue was selected on (see
    :mod:`streammix.selection`): each stream-like component's density is then
    normalised over them, star by star with its errors, as the background flows
    (trained on the selected stars) already are, and a prior keeps each
    component's proper-motion track inside the box (an error-free star of it
    must pass the cut, :meth:`~streammix.components.StreamComponent.selection_log_prior`).
    Needs the config's ``frame``."""

    parallax: tuple[float | None, float | None] | None = Field(
        None, description="observed parallax range (mas), null for an open side, e.g. [null, 1.0]"
    )
    pmra: tuple[float, float] | None = Field(None, description="observed pmra cos(dec) range (mas/yr), ICRS")
    pmdec: tuple[float, float] | None = Field(None, description="observed pmdec range (mas/yr), ICRS")
    reflex_distance: float | None = Field(
        None,
        gt=0,
        description="kpc: the distance at which the catalogue's stream-frame proper motions were corrected for "
        "the solar reflex (null: not corrected), so that its cuts in pmra, pmdec map onto them",
    )

    @model_validator(mode="after")
    def _ordered(self) -> SelectionConfig:
        for name in ("parallax", "pmra", "pmdec"):
            value = getattr(self, name)
            if value is not None and None not in value and not value[0] < value[1]:
                raise ValueError(f"{name}: lower limit {value[0]} must be below upper limit {value[1]}")
        if (self.pmra is None) != (self.pmdec is None):
            raise ValueError("pmra and pmdec: give both cuts of the proper-motion box (or neither)")
        return self


class GaiaQueryConfig(_Section):
    """The Gaia archive query that makes ``data.path`` (``streammix query``; needs network).

    The config's field, in its ``frame``, is cut into chunks along phi1; each
    chunk is one synchronous ADQL query of ``table`` inside a sky polygon around
    it, with the cuts below, transformed into the stream frame.

    Example:
        >>> GaiaQueryConfig().table, GaiaQueryConfig().chunk
        ('gaiadr3.gaia_source', 5.0)
    """

    url: str = Field(
        "https://gea.esac.esa.int/tap-server/tap",
        description="base URL of the TAP service (ESA's Gaia archive; its /sync endpoint runs each chunk)",
    )
    table: str = Field("gaiadr3.gaia_source", description="the archive table queried (gaia_source column names)")
    chunk: float = Field(5.0, gt=0, le=30, description="deg of phi1 per query chunk")
    margin: float = Field(
        0.5,
        ge=0,
        le=5,
        description="deg by which each chunk's sky polygon is widened; stars outside the field are cut after the "
        "transform",
    )
    g_max: float = Field(20.5, description="faint limit: phot_g_mean_mag < g_max (mag)")
    parallax_max: float | None = Field(
        1.0,
        description="parallax - 3 parallax_error < parallax_max (mas), which keeps distant stars (null: no cut)",
    )
    pm_margin: float | None = Field(
        None,
        gt=0,
        description="mas/yr: keep stars whose (pmra, pmdec) lie within this box half-width of the track's proper "
        "motion at the chunk's middle (needs galstreams with proper motions; null: no proper-motion cut)",
    )
    galstreams: str | None = Field(
        None,
        description="'Name' or 'Name/reference' of the galstreams track whose proper motions centre pm_margin's boxes",
    )
    maxrec: int = Field(
        3_000_000,
        ge=1,
        description="most rows a chunk may return; a chunk that reaches it is an error (use smaller chunks)",
    )
    timeout: float = Field(600.0, gt=0, description="seconds one chunk's request may take")
    retries: int = Field(2, ge=0, description="extra attempts of a chunk after a failed request")


class DataConfig(_Section):
    """Where the stars come from and how their columns are named."""

    path: str | None = Field(
        None,
        description="the stars' table (FITS, ECSV, CSV, Parquet, VOTable or HDF5), relative to the config file's "
        "folder, $STREAMMIX_SHARED_DATA and ~ expanded (null: none; the stars must then be passed in)",
    )
    columns: dict[str, Any] = Field(
        {},
        description="which of the file's columns hold each quantity, band, error and unit (empty: the default names)",
    )
    gaia_frame: str | None = Field(
        None,
        description="built-in stream frame (gd1 or pal5) into which a raw Gaia archive file (ra, dec, parallax, pmra, "
        "pmdec and their errors) is transformed (null: the file is in the stream frame already)",
    )
    reflex_distance: str | float | None = Field(
        None,
        description="with gaia_frame, remove the solar reflex motion from the proper motions: 'parallax' puts each "
        "star at the distance 1/parallax (its proper motions missing where parallax is not positive) (null: observed "
        "proper motions; ignored without gaia_frame); a number puts every star at that distance in kpc",
    )
    cut_to_field: bool = Field(
        False,
        description="drop the stars outside the field's phi1 and phi2 limits (false: such stars are an error); stars "
        "without phi2 are kept",
    )
    selection: SelectionConfig | None = Field(
        None,
        description="the cuts on observed quantities the catalogue was selected on (null: none)",
    )
    parallax_zero_point: float = Field(
        0.0,
        ge=-0.2,
        le=0.2,
        description="the catalogue's parallax zero-point (mas): a stream-like component's star at distance d has "
        "observed parallax 1/d + parallax_zero_point + error (the background is learnt from the observed values and "
        "needs none). Gaia DR2: -0.029 from quasars (Lindegren et al. 2018), -0.05 for red giants (Zinn et al. "
        "2019); Gaia EDR3/DR3: -0.017 from quasars (Lindegren et al. 2021) (0: none)",
    )
    query: GaiaQueryConfig | None = Field(
        None,
        description="the Gaia archive query that writes path (streammix query; null: the file is made otherwise)",
    )

    def column_map(self):
        """The ``columns`` section as a validated :class:`~streammix.data.ColumnMap`
        (errors name ``data.columns.<key>``)."""
        return ColumnMap.from_dict(self.columns or None, source="data.columns")


class Config(_Section):
    """A whole stream description.

    Example:
        >>> cfg = Config.model_validate({"name": "demo", "field": {"phi1": [-90, 10], "phi2": [-5, 5]}})
        >>> cfg.model.components[0].name, cfg.fit.ensemble
        ('stream', 4)
        >>> try:
        ...     Config.from_dict({"name": "x", "field": {"phi1": [0, 1], "phi2": [0, 1]}, "fitt": {}})
        ... except InputError as e:
        ...     print(e)
        config: fitt: Extra inputs are not permitted
    """

    name: str = Field("stream", description="the stream's name, recorded in the fit's summary")
    data: DataConfig = Field(DataConfig(), description="where the stars come from and how their columns are named")
    frame: str | FrameConfig | None = Field(
        None,
        description="stream frame of the stars' phi1 and phi2: a built-in one (gd1 or pal5, any spelling) or a "
        "great circle {name, pole: [ra, dec], origin: [ra, dec]} (deg), used by the "
        "proper-motion cuts of data.selection, by galstreams priors and by injection (null: none; a galstreams track "
        "then comes in its stream's default frame)",
    )
    field: FieldConfig = Field(description="the field's limits in the stream frame (deg)")
    model: ModelConfig = Field(ModelConfig(), description="the mixture")
    fit: FitConfig = Field(FitConfig(), description="how the mixture is fitted")
    source: str | None = Field(
        None,
        exclude=True,
        description="where the config was read from, for error messages (not written out)",
    )

    @model_validator(mode="after")
    def _selection_needs_frame(self) -> Config:
        selection = self.data.selection
        if selection is not None and selection.pmra is not None and self.frame is None:
            raise ValueError("data.selection: proper-motion cuts need the config's frame (e.g. frame: gd1)")
        if self.model.cut_normalisation in ("none", "stars_without_photometry") and selection is None:
            raise ValueError(
                f"model.cut_normalisation {self.model.cut_normalisation}: needs data.selection (the catalogue's cuts)"
            )
        form = self.model.cut_normalisation
        if form in ("luminosity_function", "luminosity_function_with_photometry"):
            if selection is None:
                raise ValueError(f"model.cut_normalisation {form}: needs data.selection (the catalogue's cuts)")
            if selection.pmra is not None and not {"pm_phi1_cosphi2", "pm_phi2"} <= set(self.model.coordinates):
                raise ValueError(
                    f"model.cut_normalisation {form}: data.selection cuts on pmra, pmdec, but "
                    f"model.coordinates {self.model.coordinates} lack pm_phi1_cosphi2 and pm_phi2"
                )
        if selection is not None:
            cut = {"parallax"} if selection.parallax is not None else set()
            cut |= {"pm_phi1_cosphi2", "pm_phi2"} if selection.pmra is not None else set()
            for i, block in enumerate(self.model.background.blocks):
                limited = sorted(cut & set(block.coordinates))
                if limited and not block.limits_allowed:
                    raise ValueError(
                        f"model.background.blocks.{i}: a {block.kind} block cannot honour data.selection's cuts on "
                        f"{limited} (model them in a flow block)"
                    )
        return self

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "config") -> Config:
        """Validate a mapping; errors become one-line :class:`InputError` s naming the key."""
        if not isinstance(data, dict):
            raise InputError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
        try:
            return cls.model_validate({**data, "source": source if source != "config" else None})
        except ValidationError as error:
            key, why = first_error(error, _without_tags)
            raise InputError(f"{source}: {key or '(top level)'}: {why}") from None

    @classmethod
    def from_yaml(cls, path: str | os.PathLike, overrides: Sequence[str] = ()) -> Config:
        """Read and validate a YAML file; a relative ``data.path`` or ``model.isochrone.path``
        is taken from the file's folder (after expanding ``$STREAMMIX_SHARED_DATA`` and ``~``).
        ``overrides``: ``KEY=VALUE`` settings written in before validation
        (:mod:`streammix.overrides`, the command line's ``--set``); a relative path given
        there is taken from the working directory, as a path typed on a command line is.
        """
        path = Path(path)
        if not path.is_file():
            raise InputError(f"config '{path}': no such file")
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark is not None else ""
            raise InputError(f"config '{path}': not valid YAML{where}") from None
        data = data if data is not None else {}
        source, overridden = f"config '{path}'", set()
        if overrides:
            if not isinstance(data, dict):
                raise InputError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
            parsed = parse_overrides(overrides)
            data = apply_overrides(data, parsed)
            source, overridden = f"{source} with --set", {".".join(keys) for keys, _ in parsed}
        config = cls.from_dict(data, source=source)
        def resolved(value: str, *keys: str) -> str:
            # a relative path is the config file's folder's, or the working directory's when --set gave
            # it (its own key or a mapping above it)
            given = {".".join(keys[: i + 1]) for i in range(len(keys))} & overridden
            return str(resolve_data_path(value, Path.cwd() if given else path.parent))

        if config.data.path is not None:
            data_section = config.data.model_copy(update={"path": resolved(config.data.path, "data", "path")})
            config = config.model_copy(update={"data": data_section})
        if config.model.isochrone.path is not None:
            where = resolved(config.model.isochrone.path, "model", "isochrone", "path")
            isochrone = config.model.isochrone.model_copy(update={"path": where})
            config = config.model_copy(update={"model": config.model.model_copy(update={"isochrone": isochrone})})
        return config

    def to_yaml(self) -> str:
        """The configuration as YAML (round-trips through :meth:`from_dict`)."""
        return yaml.safe_dump(self.model_dump(mode="json", exclude={"source"}), sort_keys=False)


def _without_tags(loc: tuple) -> list:
    """An error's location without the kind tags pydantic inserts after a
    component's or block's index (``model.components.0.stream.bounds`` ->
    ``model.components.0.bounds``).

    Example:
        >>> _without_tags(("model", "components", 0, "stream", "bounds"))
        ['model', 'components', 0, 'bounds']
    """
    kinds = {"components": COMPONENT_KINDS, "blocks": BLOCK_KINDS}
    out: list = []
    for key in loc:
        if len(out) >= 2 and isinstance(out[-1], int) and out[-2] in kinds and key in kinds[out[-2]]:
            continue
        out.append(key)
    return out


def resolve_data_path(value: str, base: Path) -> Path:
    """Expand ``$STREAMMIX_SHARED_DATA`` (default ``<repo>/../shared/data``), ``~``
    and other environment variables; make a relative path relative to ``base``.

    Example:
        >>> from pathlib import Path
        >>> resolve_data_path("stars.fits", Path("/data")).as_posix()
        '/data/stars.fits'
    """
    shared = os.environ.get("STREAMMIX_SHARED_DATA") or str(Path(__file__).resolve().parents[2] / "shared" / "data")
    expanded = value.replace("${STREAMMIX_SHARED_DATA}", shared).replace("$STREAMMIX_SHARED_DATA", shared)
    expanded = os.path.expandvars(os.path.expanduser(expanded))
    p = Path(expanded)
    return p if p.is_absolute() else (base / p).resolve()
