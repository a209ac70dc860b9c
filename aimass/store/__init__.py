"""The model library: named models with integer versions, aliases (canaries too), gates, local or S3.

Layout (the same as the server's model repository, so ``aimass serve <root>`` serves it)::

    <root>/<name>/<version>/      an aimass package (aimass.json + artifacts), version = 1, 2, ...
    <root>/<name>/aliases.json    {"aliases": {"production": {"3": 0.9, "4": 0.1}}, "gates": {...}}

The root is a directory (default ``~/.aimass/models``, or ``$AIMASS_STORE``) or an fsspec URL
such as ``s3://bucket/models`` (needs ``s3fs``). Guarantees, on both:

* a version is visible only once complete: locally it is written as a hidden staging package and
  renamed into place; on object stores its manifest is uploaded last and a version without one is
  not listed. A publisher killed half-way leaves nothing visible, and the next version number
  skips whatever the dead one claimed;
* concurrent publishers get distinct versions: a file lock (``filelock``) locally, an exclusive
  create (``If-None-Match: *``) of ``<version>/.claim`` on object stores;
* checksums are verified on every load (:func:`aimass.package.verify`); remote versions are
  downloaded once into a local cache keyed by the sha256 of their manifest (``$AIMASS_CACHE``);
* names and aliases are validated (no ``/``, no ``..``, no absolute paths).

An alias points at one version or splits traffic by weight (a canary): :meth:`Store.resolve`
picks a version by weight; a server honours the split per request with :meth:`Store.alias` and
:func:`pick_version`. A gate (``{"accuracy": ">=0.9"}``) stored for an alias, or passed when
moving it, refuses versions whose recorded metrics fail it (:class:`~aimass.errors.GateFailed`).

The package, module by module:

* :mod:`aimass.store.refs`: names, aliases and references (``fraud:3``, ``fraud@production``,
  ``store://fraud/3``), the one grammar the CLI parses with too; :func:`pick_version`;
* :mod:`aimass.store.drivers`: the storage interface :class:`~aimass.store.drivers.Driver` and its
  two drivers, a local directory and any fsspec URL; an operation a driver cannot do raises
  :class:`~aimass.errors.UnsupportedOperation`;
* :mod:`aimass.store.listings`: :class:`VersionInfo` and :class:`Listing` (text, HTML, JSON);
* :mod:`aimass.store.library`: :class:`Store` and the functions on the default library.

Example:
    >>> from aimass import Model, store
    >>> v = store.publish(model, "fraud", metrics={"accuracy": 0.97})      # doctest: +SKIP
    >>> store.set_alias("fraud", "production", v, gate={"accuracy": ">=0.9"})  # doctest: +SKIP
    >>> Model.load("store://fraud@production"); Model.load("fraud:1")     # doctest: +SKIP
    >>> store.to_ref("fraud@production")
    Ref(name='fraud', version=None, alias='production')
"""

from __future__ import annotations

from aimass.store.drivers import Driver, FsspecDriver, LocalDriver
from aimass.store.library import (
    ENV_CACHE,
    ENV_ROOT,
    Store,
    listing,
    load,
    publish,
    pull,
    remove,
    remove_alias,
    resolve,
    set_alias,
    set_gate,
    show,
)
from aimass.store.listings import Listing, VersionInfo
from aimass.store.refs import Ref, check_alias, check_name, parse_ref, pick_version, to_ref

__all__ = [
    "ENV_CACHE",
    "ENV_ROOT",
    "Driver",
    "FsspecDriver",
    "Listing",
    "LocalDriver",
    "Ref",
    "Store",
    "VersionInfo",
    "check_alias",
    "check_name",
    "listing",
    "load",
    "parse_ref",
    "pick_version",
    "publish",
    "pull",
    "remove",
    "remove_alias",
    "resolve",
    "set_alias",
    "set_gate",
    "show",
    "to_ref",
]
