"""Model choice on the real GD-1 field by held-out log-likelihood (no labels).

Usage::

    python benchmarks/model_choice.py [--folds 3] [--only astrometry|joint] [--variants NAME ...] [--repeats R]
        [--out FILE.json] [--set KEY=VALUE ...]

Each variant is the shipped config (``configs/gd1_dr2.yaml``, astrometry, or
``configs/gd1_dr2_photometry.yaml``, joint) with one choice changed: without
the spur, without the cocoon, with neither, the cocoon's phi2 track held to GD-1's
(``cocoon_on_track``: within 0.3 deg every 5 deg) or free about it (``cocoon_free_track``: 1 deg every
10 deg), whichever the shipped config does not have, the cocoon no wider than 1.5 deg in phi2
(``cocoon_width_15``: DESI's sigma of 1.23 deg, Valluri et al. 2024) or at GD-1's distance (``cocoon_gd1_distance``:
distance modulus 13.8-15.5, where the shipped configs allow 13.0-16.5) or at GD-1's distance beside the shipped
cocoon renamed ``foreground`` and kept out of ``p_member`` (``cocoon_and_foreground``), with the catalogue's cuts declared
(``data.selection``: components normalised over them, flows in observed pmra, pmdec; ``with_selection_background``:
the flows only, ``model.cut_normalisation: none``; (joint) ``with_selection_without_photometry``: the components
divided star by star for the stars without photometry only, unless the shipped config has it;
(joint) ``with_selection_luminosity_function``: the same, and the stars with photometry divided by the share of
the component's stars at their phi1 that pass, averaged over its luminosity function
(``luminosity_function_with_photometry``; since session 33 with the selection prior of ``star``), unless the
shipped config has it; (joint) ``photometry_logits``: a learned logit of each stream-like component for the
stars with PS1 (``model.photometry_logits``), switched; ``no_selection``
where the shipped config declares the cuts), smaller flows, flows conditioned on
the measurement errors, flows conditioned on phi2, mixture weights that depend on the parallax error
(each of these three switched relative to the shipped config), one background block for astrometry and
photometry together instead of two (joint), the stream's cross-track profile a Student-t or a core
with wings instead of a Gaussian (``stream_student_t``, ``stream_core_wings``), velocity-dispersion
priors from the literature on the stream, spur (2.4 km/s) and cocoon (6.1 km/s), 0.2 dex
(``dispersion_prior``), Gaia DR2's parallax zero-point at 0, −0.029 mas (quasars, Lindegren et al. 2018)
or −0.05 mas (red giants, Zinn et al. 2019) or −0.08 mas (what GD-1's members' parallaxes ask at the joint
model's distance) (``zero_point_0``, ``zero_point_029``, ``zero_point_050``, ``zero_point_080``, those that
differ from the shipped config's), and (joint) PS1's magnitude errors from its depth
(``data.columns.band_error_model``, Chambers et al. 2016) switched relative to the shipped config,
with the isochrone's ``colour_spread`` at 0.01 to 0.07 mag (``band_errors_spread_002`` ...
or ``no_band_errors_spread_...``), and ``colour_spread`` alone at those values
(``colour_spread_004`` ...), and (joint) the embedded PARSEC grid at 12 Gyr turned into PS1 by
Finkbeiner et al. (2016)'s transformation instead of the MIST [Fe/H] -1.35 file, at [Fe/H] -2.19, -1.8
or -1.35 (``parsec_feh_219`` ...; ``parsec_feh_219_spread_003``/``_004`` with a narrower
``colour_spread``), each also reddened by a foreground E(B-V) of 0.02-0.06 (``model.isochrone.reddening``;
``parsec_feh_219_ebv_004`` ...), or MIST's own [Fe/H] -2.20 isochrone of 12 Gyr in Johnson-Cousins
turned into PS1 by Tonry et al. (2012)'s transformation (``mist_feh_220``; ``mist_feh_220_ebv_002`` ... ``_008``
reddened, ``mist_feh_220_spread_003`` ... with another ``colour_spread``), a power-law mass function
dN/dm ~ m^-alpha of alpha 1.5, 1.0, 0.5 or 0 instead of Kroupa's (2.3 above 0.5 Msun, where GD-1's visible
stars are; ``power_law_150`` ...: a stream that lost its low-mass stars first), and the shipped isochrone reddened (``ebv_002``, ``ebv_004``), or with 50 or 100 segments in its quadrature
instead of 200 (``nodes_050``, ``nodes_100``), or a share of 0, 0.01, 0.03 or 0.1 of the stream's stars off
its isochrone with the field's magnitudes (``outlier_fraction_000`` ...; ``model.isochrone.outlier_fraction``,
those the shipped config does not have); the isochrone's faint limit where the file's stars of
the stream's colours end (``magnitude_limit_fitted``: PS1 i, fitted by ``benchmarks/magnitude_limit.py``)
or at g = 21.5 +- 0.15 (``magnitude_limit_g_215``, the config's until session 23), whichever the
shipped config does not have; (joint) the share of the field's stars with PS1 at a star's parallax error,
normalised over the stream's luminosity function (``model.photometry_share``, switched: ``photometry_share``
or ``no_photometry_share``); and two fit settings that cost time: ``fit.patience`` 150
steps instead of 300 (``patience_150``), ``fit.warm_start_steps`` 100 instead of 300
(``warm_start_100``) and (joint) ``fit.astrometry_steps`` 250 instead of 500
(``astrometry_steps_250``); and the shipped config with ``fit.seed`` 1 or 2 higher (``fit_seed_1``,
``fit_seed_2``; meant for one fit per fold: with ``--repeats`` they repeat the shipped config's own
later repeats): the spread the fit's own randomness gives a comparison, beyond the paired standard error; Gaia DR2's external
parallax errors (Lindegren et al. 2018: 1.08 times the formal error and 0.043 mas in quadrature,
``data.columns.parallax_err_external``), switched (``parallax_err_external`` or ``no_parallax_err_external``);
the spur's phi1 range begun at -42 deg, not -37 (``spur_from_42``); the cocoon's bounds widened where its
fits sit at them, its distance modulus from 11.0 (``cocoon_distmod_from_11``), its phi2 width to 6 deg
(``cocoon_width_to_6``) or both (``cocoon_near_and_wide``); the modelled proper-motion errors at 0.8, 1.0, 1.2, 1.4, 1.7
or 2.0 times the parallax error (``pm_err_ratio_08`` ... ``_20``, those the shipped config does not have; the file
has no proper-motion errors). ``--variants`` runs
the shipped config and the named variants only; ``--repeats R`` fits each R times per fold with other fit
seeds, so that the differences' errors hold the fits' own spread; ``--set`` changes the shipped config of
the groups run before the variants do (a setting only one of the configs takes, such as
``--set model.cut_normalisation=stars_without_photometry``, which needs bands, with ``--only``). Every variant is fitted on the same K-1 folds
of the same 13,976 stars (one ensemble member per fold) and scores the held-out fold
(:func:`streammix.compare.compare`). The astrometric and joint models are also
compared with each other on the astrometry both model (the joint one scored
without its isochrone terms). Prints one markdown table per group and, last,
a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from _common import ROOT, SHARED, apply_sets, emit, machine, parse_sets

from streammix.fit import load_stars


# PS1 3pi single-epoch 5-sigma depths, epochs per band and calibration floor (Chambers et al. 2016)
# MIST v1.2, [Fe/H] -2.20, 12 Gyr, in Johnson-Cousins (Vega); the shipped config's isochrone is MIST's -1.35 in PS1
MIST_220 = str(SHARED / "isochrones" / "mist_v1.2_ubvriplus_feh-2.20_12gyr.iso.cmd")
PS1_DEPTHS = {"ps1_g": {"depth": 22.0, "epochs": 12, "floor": 0.01}, "ps1_i": {"depth": 21.5, "epochs": 12, "floor": 0.01}}


DR2_PARALLAX_EXTERNAL = {"factor": 1.08, "floor": 0.043}  # Gaia DR2's external parallax errors, G > 13 (mas)
COCOON_ON_TRACK = (5.0, 0.3)  # galstreams spacing (deg) and phi2 width (deg) of the cocoon's track prior
COCOON_FREE_TRACK = (10.0, 1.0)  # the astrometric config's; the joint config's until session 25
# the cocoon's largest phi2 width (deg) in ``cocoon_width_15``: DESI's FWHM of 2.9 deg, sigma 1.23
# (Valluri et al. 2024), with room; the shipped configs allow 3.0
COCOON_WIDTH_15 = 1.5
# the cocoon's distance modulus in ``cocoon_gd1_distance``: GD-1's (7-10 kpc, 14.2-15.0, Koposov et al. 2010;
# the stream's fitted 14.2-14.5), with room; the shipped configs allow 13.0-16.5, and the joint fits put the
# cocoon at 13.0-13.2, a foreground population at 4 kpc (benchmarks/RESULTS.md, session 26)
COCOON_GD1_DISTMOD = (13.8, 15.5)
COCOON_NEAR_DISTMOD = 11.0  # the cocoon's lower distance-modulus bound in the variants that let it come nearer
COCOON_WIDE = 6.0  # its upper phi2 width (deg) in those that let it be wider


def variants(base) -> dict:
    """The shipped config and one-change variants of it, by name."""
    data = base.model_dump(mode="json", exclude={"source"})

    def changed(edit) -> dict:
        copy = json.loads(json.dumps(data))
        edit(copy)
        return copy

    def drop(*names):
        def edit(d):
            d["model"]["components"] = [c for c in d["model"]["components"] if c["name"] not in names]
            if d["model"].get("member_components"):  # the dropped ones leave p_member too
                kept = [c for c in d["model"]["member_components"] if c not in names]
                d["model"]["member_components"] = kept or None  # none left: the default, every component
        return edit

    def flow(**settings):
        return lambda d: d["model"]["background"]["flow"].update(settings)

    def toggle_background(key):  # a background setting switched from its shipped value
        return lambda d: d["model"]["background"].update({key: not d["model"]["background"][key]})

    def toggled(key):  # the variant's name says what it changes
        return ("no_" if data["model"]["background"][key] else "") + key

    def error_weights(d):  # weights that depend on the parallax error as well as phi1
        d["model"]["error_weights"] = 0 if d["model"]["error_weights"] else 8
        if not d["model"]["error_weights"]:  # the photometry share's normalised form goes with them
            d["model"]["photometry_share"] = False

    def with_selection(d):  # the file's cuts (see the config's comment), every star divided by its chance of passing
        d["data"]["selection"] = {"parallax": [None, 1.0], "pmra": [-7.0, -2.0], "pmdec": [-15.0, -11.0], "reflex_distance": 8.0}
        d["model"]["cut_normalisation"] = "star"

    def without_selection(d):  # no cuts declared
        d["data"]["selection"] = None
        d["model"]["cut_normalisation"] = "star"

    def stream_profile(name):
        return lambda d: next(c for c in d["model"]["components"] if c["name"] == "stream").update(profile=name)

    def dispersion_prior(d):  # GD-1's velocity dispersions from the literature (streammix.dispersion)
        for component in d["model"]["components"]:
            median = {"stream": 2.4, "spur": 2.4, "cocoon": 6.1}.get(component["name"])
            if median is not None:
                component["velocity_dispersion"] = {"median": median, "dex": 0.2}

    def spur_range(low=None, high=None):  # the spur's phi1 range moved
        def edit(d):
            spur = next(c for c in d["model"]["components"] if c["name"] == "spur")
            old = spur["phi1_range"]
            spur["phi1_range"] = [old[0] if low is None else low, old[1] if high is None else high]
        return edit

    def parallax_zero_point(value):  # Gaia DR2's zero-point (data.parallax_zero_point)
        return lambda d: d["data"].update(parallax_zero_point=value)

    external = data["data"]["columns"].get("parallax_err_external")

    def parallax_err_external(d):  # Lindegren et al. 2018's factor 1.08 and floor 0.043 mas, or none
        d["data"]["columns"]["parallax_err_external"] = None if external else DR2_PARALLAX_EXTERNAL

    # the cocoon's phi2 track held to GD-1's (galstreams, every 5 deg within 0.3 deg: a cocoon surrounds the
    # thin stream, Malhan et al. 2019, Valluri et al. 2024), or free about it (every 10 deg within 1 deg)
    cocoon_prior = next((c.get("galstreams") for c in data["model"]["components"] if c["name"] == "cocoon"), None)

    def cocoon_track(spacing, width):
        def edit(d):
            entry = next(c for c in d["model"]["components"] if c["name"] == "cocoon")
            entry["galstreams"].update(spacing=spacing, widths={**entry["galstreams"].get("widths", {}), "phi2": width})
        return edit

    def cocoon_bound(parameter, low=None, high=None):  # one of the cocoon's bounds moved
        def edit(d):
            bounds = next(c for c in d["model"]["components"] if c["name"] == "cocoon")["bounds"]
            old = bounds[parameter]
            bounds[parameter] = [old[0] if low is None else low, old[1] if high is None else high]
        return edit

    def cocoon_and_foreground(d):
        components = d["model"]["components"]
        cocoon = next(c for c in components if c["name"] == "cocoon")
        at_gd1 = json.loads(json.dumps(cocoon))
        at_gd1["bounds"]["distmod"] = list(COCOON_GD1_DISTMOD)
        cocoon["name"] = "foreground"
        components.append(at_gd1)
        d["model"]["member_components"] = [c["name"] for c in components if c["name"] != "foreground"]

    out = {
        "shipped": data,
        **{
            name: changed(parallax_zero_point(value))
            for name, value in (
                ("zero_point_0", 0.0), ("zero_point_029", -0.029), ("zero_point_050", -0.05), ("zero_point_080", -0.08)
            )
            if value != data["data"]["parallax_zero_point"]
        },
        # Gaia DR2's external parallax errors (data.columns.parallax_err_external), switched
        ("no_parallax_err_external" if external else "parallax_err_external"): changed(parallax_err_external),
        # the modelled proper-motion errors (the file has none) at another multiple of the parallax error
        # than the shipped config's 1.7 (Gaia DR2's median ratio at G = 20; 2.0 at G = 17, Lindegren et al. 2018).
        # On a config whose stream-like densities are not normalised over the catalogue's cuts (both shipped
        # ones, for some stars) smaller errors likely score better whatever the truth: compare them with the
        # cuts declared (--set data.selection=... --set model.cut_normalisation=star; RESULTS.md, session 32)
        **{
            name: changed(lambda d, ratio=ratio: d["data"]["columns"].update(pm_err_per_parallax_err=ratio))
            for name, ratio in (
                ("pm_err_ratio_08", 0.8), ("pm_err_ratio_10", 1.0), ("pm_err_ratio_12", 1.2),
                ("pm_err_ratio_14", 1.4), ("pm_err_ratio_17", 1.7), ("pm_err_ratio_20", 2.0),
            )
            if ratio != data["data"]["columns"].get("pm_err_per_parallax_err")
        },
        "dispersion_prior": changed(dispersion_prior),
        "stream_student_t": changed(stream_profile("student_t")),
        "stream_core_wings": changed(stream_profile("core_wings")),
        "no_spur": changed(drop("spur")),
        # the spur's phi1 range begun 5 deg earlier (-42 for -37), where the residuals of the joint fit
        # show +3.1 to +3.7 sigma at phi1 -39, phi2 +1.0 (session 30): the spur's extension towards the gap?
        "spur_from_42": changed(spur_range(-42.0, None)),
        "no_cocoon": changed(drop("cocoon")),
        "stream_only": changed(drop("spur", "cocoon")),
        "with_selection": changed(with_selection),
        # the same cuts seen by the background flows only, the stream-like components not normalised over them
        "with_selection_background": changed(
            lambda d: (with_selection(d), d["model"].update(cut_normalisation="none"))),
        ("no_error_weights" if data["model"]["error_weights"] else "error_weights"): changed(error_weights),
        toggled("error_context"): changed(toggle_background("error_context")),
        toggled("phi2_context"): changed(toggle_background("phi2_context")),
        # fit settings that cost time: a shorter patience (each member stops sooner after its best state)
        "patience_150": changed(lambda d: d["fit"].update(patience=150)),
        # and fewer steps pulling each member's networks to the prior tracks before the fit
        "warm_start_100": changed(lambda d: d["fit"].update(warm_start_steps=100)),
        # the shipped config itself with other fit seeds: how far a comparison moves by the fit's own randomness
        # (initialisation, batches), which the paired standard error over the stars does not hold
        "fit_seed_1": changed(lambda d: d["fit"].update(seed=d["fit"].get("seed", 0) + 1)),
        "fit_seed_2": changed(lambda d: d["fit"].update(seed=d["fit"].get("seed", 0) + 2)),
    }
    if cocoon_prior:
        # the cocoon no wider in phi2 than DESI finds it, with room; at GD-1's distance
        out["cocoon_width_15"] = changed(cocoon_bound("phi2_width", high=COCOON_WIDTH_15))
        out["cocoon_gd1_distance"] = changed(cocoon_bound("distmod", *COCOON_GD1_DISTMOD))
        # the cocoon fits as a nearer population at its bounds (distance modulus 13.0, 3 deg wide;
        # sessions 26-27): nearer (from 11.0, 1.6 kpc), wider (to 6 deg), or both
        out["cocoon_distmod_from_11"] = changed(cocoon_bound("distmod", low=COCOON_NEAR_DISTMOD))
        out["cocoon_width_to_6"] = changed(cocoon_bound("phi2_width", high=COCOON_WIDE))
        out["cocoon_near_and_wide"] = changed(
            lambda d: (cocoon_bound("distmod", low=COCOON_NEAR_DISTMOD)(d), cocoon_bound("phi2_width", high=COCOON_WIDE)(d)))
        # the cocoon as shipped renamed ``foreground`` and kept outside p_member, and beside it a cocoon at
        # GD-1's distance: does the field hold both a nearer population and GD-1's own cocoon?
        out["cocoon_and_foreground"] = changed(cocoon_and_foreground)
        # the cocoon's track switched between held and free
        if cocoon_prior.get("widths", {}).get("phi2", COCOON_FREE_TRACK[1]) <= COCOON_ON_TRACK[1]:
            out["cocoon_free_track"] = changed(cocoon_track(*COCOON_FREE_TRACK))
        else:
            out["cocoon_on_track"] = changed(cocoon_track(*COCOON_ON_TRACK))
    if data["model"]["bands"]:
        bands = data["model"]["bands"]

        def band_errors(spread):  # PS1's errors from its depth (streammix.depth_errors), or none
            def edit(d):
                if d["data"]["columns"].get("band_error_model"):
                    d["data"]["columns"]["band_error_model"] = {}
                else:
                    d["data"]["columns"]["band_error_model"] = PS1_DEPTHS
                d["model"]["isochrone"]["colour_spread"] = spread
            return edit

        def colour_spread(spread):
            return lambda d: d["model"]["isochrone"].update(colour_spread=spread)

        has_errors = bool(data["data"]["columns"].get("band_error_model"))
        for spread in (0.01, 0.02, 0.03, 0.04, 0.05, 0.07):
            name = ("no_band_errors" if has_errors else "band_errors") + f"_spread_{round(spread * 100):03d}"
            out[name] = changed(band_errors(spread))
            if spread != data["model"]["isochrone"]["colour_spread"]:
                out[f"colour_spread_{round(spread * 100):03d}"] = changed(colour_spread(spread))

        def isochrone(spread=None, **settings):  # model.isochrone settings changed, colour_spread too if given
            def edit(d):
                d["model"]["isochrone"].update(settings)
                if spread is not None:
                    d["model"]["isochrone"]["colour_spread"] = spread
            return edit

        def parsec(feh, spread=None, ebv=0.0):  # the embedded PARSEC grid in PS1 (streammix.band_transforms), 12 Gyr
            return isochrone(spread, path=None, band_transform="finkbeiner2016", age=12.0, feh=feh, reddening=ebv)

        for feh in (-2.19, -1.8, -1.35):
            out[f"parsec_feh_{round(-feh * 100):03d}"] = changed(parsec(feh))
            for ebv in (0.02, 0.03, 0.04, 0.06):
                out[f"parsec_feh_{round(-feh * 100):03d}_ebv_{round(ebv * 100):03d}"] = changed(parsec(feh, ebv=ebv))
        for spread in (0.03, 0.04):
            out[f"parsec_feh_219_spread_{round(spread * 100):03d}"] = changed(parsec(-2.19, spread))

        def mist_220(ebv=0.0, spread=None):  # MIST [Fe/H] -2.20 in Johnson-Cousins, turned into PS1 (Tonry et al. 2012)
            return isochrone(spread, path=MIST_220, band_transform="tonry2012", reddening=ebv)

        out["mist_feh_220"] = changed(mist_220())
        for ebv in (0.02, 0.04, 0.06, 0.08):
            out[f"mist_feh_220_ebv_{round(ebv * 100):03d}"] = changed(mist_220(ebv))
        for spread in (0.03, 0.04, 0.07):
            out[f"mist_feh_220_spread_{round(spread * 100):03d}"] = changed(mist_220(spread=spread))
        for slope in (1.5, 1.0, 0.5, 0.0):  # a power-law mass function over the visible masses (~0.55-0.8 Msun)
            out[f"power_law_{round(slope * 100):03d}"] = changed(
                lambda d, slope=slope: d["model"]["isochrone"].update(mass_function="power_law", power_law_slope=slope))
        out["astrometry_steps_250"] = changed(lambda d: d["fit"].update(astrometry_steps=250))
        for nodes in (50, 100):  # fewer segments in the isochrone's quadrature over mass (faster steps)
            out[f"nodes_{nodes:03d}"] = changed(lambda d, nodes=nodes: d["model"]["isochrone"].update(nodes=nodes))
        for share in (0.0, 0.01, 0.03, 0.1):  # stars off the isochrone, with the field's magnitudes (model.isochrone.outlier_fraction)
            if share != data["model"]["isochrone"].get("outlier_fraction", 0.0):
                out[f"outlier_fraction_{round(share * 100):03d}"] = changed(
                    lambda d, share=share: d["model"]["isochrone"].update(outlier_fraction=share))
        for ebv in (0.02, 0.04):  # the shipped isochrone reddened (model.isochrone.reddening)
            out[f"ebv_{round(ebv * 100):03d}"] = changed(lambda d, ebv=ebv: d["model"]["isochrone"].update(reddening=ebv))

        def magnitude_limit(band, limit, width):  # the isochrone's faint limit (model.isochrone.magnitude_limits)
            def edit(d):
                d["model"]["isochrone"]["magnitude_limits"] = {band: [12.0, limit]}
                d["model"]["isochrone"]["limit_error"] = width
            return edit

        # the limit fitted to the file's stars of the stream's colours (benchmarks/magnitude_limit.py),
        # or g < 21.5 +- 0.15 (the config's until session 23), whichever the shipped config does not have
        from magnitude_limit import STREAM_COLOURS, limits

        fitted = limits(load_stars(base), STREAM_COLOURS)["ps1_i"]
        choices = {"magnitude_limit_fitted": ("ps1_i", round(fitted.limit, 2), round(fitted.width, 2)),
                   "magnitude_limit_g_215": ("ps1_g", 21.5, 0.15)}  # fmt: skip
        shipped_limit = data["model"]["isochrone"]["magnitude_limits"]
        for name, (band, limit, width) in choices.items():
            if shipped_limit != {band: [12.0, limit]}:
                out[name] = changed(magnitude_limit(band, limit, width))

        def one_block(d):
            d["model"]["background"]["blocks"] = [[*d["model"]["coordinates"][1:], *bands]]

        out["one_block"] = changed(one_block)
        # the catalogue's cuts, the components divided by each star's probability of passing for the stars
        # without photometry only (model.cut_normalisation: stars_without_photometry)
        if data["model"]["cut_normalisation"] != "stars_without_photometry" or data["data"]["selection"] is None:
            out["with_selection_without_photometry"] = changed(
                lambda d: (with_selection(d), d["model"].update(cut_normalisation="stars_without_photometry")))
        # the same, and the stars with photometry divided by the share of the component's stars that pass the
        # cuts, averaged over its luminosity function (model.cut_normalisation: luminosity_function_with_photometry)
        if data["model"]["cut_normalisation"] != "luminosity_function_with_photometry" or data["data"]["selection"] is None:
            out["with_selection_luminosity_function"] = changed(
                lambda d: (with_selection(d), d["model"].update(cut_normalisation="luminosity_function_with_photometry")))
        # a learned logit of each stream-like component for the stars with PS1 (model.photometry_logits), switched
        logits = data["model"]["photometry_logits"]
        out["no_photometry_logits" if logits else "photometry_logits"] = changed(
            lambda d: d["model"].update(photometry_logits=not logits))
        # the share of the field's stars with PS1 at a star's parallax error, normalised over the stream's
        # luminosity function (model.photometry_share, beside the learned error weights), switched
        share = data["model"]["photometry_share"]
        out["no_photometry_share" if share else "photometry_share"] = changed(
            lambda d: d["model"].update(photometry_share=not share))
        del out["stream_only"]  # the joint fits take minutes each: the one-change variants only
    else:
        out["small_flows"] = changed(flow(hidden=32, transforms=2))
    if data["data"]["selection"] is not None:  # the shipped config declares the cuts: without them
        out["no_selection"] = changed(without_selection)
    return out


def markdown(table, title: str) -> str:
    lines = [
        f"**{title}** ({table.meta['folds']} folds, baseline `{table.meta['baseline']}`)",
        "",
        "| config | held-out log L per star | total | difference from baseline (paired) | of which the fits' spread "
        "| fit time, all folds |",
        "|---|---|---|---|---|---|",
    ]
    for row in table:
        spread = f"± {row['delta_total_fit_err']:.1f}" if row["repeats"] > 1 else "not measured (1 fit)"
        lines.append(
            f"| {row['config']} | {row['mean_loglike']:.4f} ± {row['mean_loglike_err']:.4f} | {row['total_loglike']:.1f} "
            f"| {row['delta_total']:+.1f} ± {row['delta_total_err']:.1f} | {spread} | {row['seconds']:.0f} s |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", choices=["astrometry", "joint", "versus"], default=None)
    parser.add_argument("--variants", nargs="+", default=None, help="only the shipped config and these variants")
    parser.add_argument("--repeats", type=int, default=1,
                        help="fits of each config per fold with other fit seeds (their spread enters the errors)")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON summary here")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="a setting of the shipped configs of the groups run (YAML value), before the variants "
                        "change it, as in injection.py")
    args = parser.parse_args()

    import os

    os.environ.setdefault("STREAMMIX_SHARED_DATA", str(SHARED))
    from streammix.compare import compare
    from streammix.config import Config

    def shipped(name: str, group: str) -> Config:
        config = Config.from_yaml(ROOT / "configs" / name)
        if not args.sets or args.only not in (group, "versus", None):
            return config
        data = apply_sets(config.model_dump(mode="json", exclude={"source"}), parse_sets(args.sets))
        return Config.from_dict(data)

    astrometry = shipped("gd1_dr2.yaml", "astrometry")
    joint = shipped("gd1_dr2_photometry.yaml", "joint")
    groups = {
        "astrometry": {k: Config.from_dict(v) for k, v in variants(astrometry).items()},
        "joint": {k: Config.from_dict(v) for k, v in variants(joint).items()},
        "versus": {"astrometry": astrometry, "joint": joint},
    }
    if args.variants is not None:
        for group in ("astrometry", "joint"):
            unknown = set(args.variants) - set(groups[group])
            if unknown and args.only == group:
                parser.error(f"unknown variants {sorted(unknown)} of {group}; choose from {sorted(groups[group])}")
            groups[group] = {k: v for k, v in groups[group].items() if k == "shipped" or k in args.variants}
    summary = {"machine": machine(), "folds": args.folds, "seed": args.seed, "repeats": args.repeats, "sets": args.sets,
               "groups": {}}
    for group, configs in groups.items():
        if args.only is not None and group != args.only:
            continue
        started = time.perf_counter()
        result = compare(list(configs.values()), folds=args.folds, seed=args.seed, repeats=args.repeats, names=list(configs))
        table = result.summary()
        title = {
            "astrometry": "GD-1, astrometric model (configs/gd1_dr2.yaml)",
            "joint": "GD-1, joint model (configs/gd1_dr2_photometry.yaml)",
            "versus": "GD-1, astrometric against joint, scored on the astrometry both model",
        }[group]
        print(markdown(table, title), "\n", flush=True)
        summary["groups"][group] = {
            "seconds": time.perf_counter() - started,
            "rows": [{k: (v.item() if hasattr(v, "item") else v) for k, v in zip(table.colnames, row)} for row in table],
        }
        if args.out is not None:
            args.out.write_text(json.dumps(summary, indent=1, default=float))
    emit(summary)


if __name__ == "__main__":
    main()
