"""Published membership catalogs: a registry, guarded downloads, one schema, cross-matching.

:mod:`~streammix.catalogs.registry`
    One YAML file per catalog in ``streammix/resources/catalogs/`` (or the
    folder named by ``STREAMMIX_CATALOGS``): where it lives (Zenodo record,
    VizieR table, package), its identifiers and how far they were verified,
    its columns, and how it gives membership (a probability with the paper's
    own threshold, a flag, or an expression over columns such as boolean masks).
:mod:`~streammix.catalogs.download`
    Fetching into a cache, treating every server as hostile: file names,
    URLs, redirects and sizes are checked before anything lands, and nothing
    partial, corrupt or outside the cache folder is ever written.
:mod:`~streammix.catalogs.schema`
    Reading each real file shape (ECSV with spaces in names and SkyCoord
    columns, 2-D sample columns, FITS masks, VizieR VOTables) into the common
    schema ``source_id, ra, dec, p_member, member_flag, catalog``.
:mod:`~streammix.catalogs.crossmatch`
    How a fit's members agree with a catalog: overlap, a confusion table at
    each side's own cut, rank correlation, a figure.

Example:
    >>> from streammix.catalogs import get_catalog
    >>> get_catalog("starkman2023_gd1").membership.describe()
    '`stream (50%)` > 0.8'
"""

from .crossmatch import compare_with_catalog, crossmatch, crossmatch_figure
from .download import (
    CACHE_ENV,
    DEFAULT_MAX_SIZE,
    MAX_RECORD_FILES,
    VIZIER_URL_ENV,
    ZENODO_URL_ENV,
    cache_dir,
    fetch,
    format_size,
    parse_size,
)
from .registry import REGISTRY_ENV, Catalog, CatalogFile, Membership, check_file_name, get_catalog, list_catalogs
from .schema import SCHEMA, evaluate_expression, load, read_catalog_file, to_schema

__all__ = [
    "CACHE_ENV",
    "DEFAULT_MAX_SIZE",
    "MAX_RECORD_FILES",
    "REGISTRY_ENV",
    "SCHEMA",
    "VIZIER_URL_ENV",
    "ZENODO_URL_ENV",
    "Catalog",
    "CatalogFile",
    "Membership",
    "cache_dir",
    "check_file_name",
    "compare_with_catalog",
    "crossmatch",
    "crossmatch_figure",
    "evaluate_expression",
    "fetch",
    "format_size",
    "get_catalog",
    "list_catalogs",
    "load",
    "parse_size",
    "read_catalog_file",
    "to_schema",
]
