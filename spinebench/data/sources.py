"""Data-source specs: one string names a data source everywhere (CLI, run-all, tests, demo).

Grammar::

    aasce=PATH        AASCE 2019 / SpineWeb 16 (folder holding boostnet_labeldata/, or that folder)
    vindr=PATH        VinDr-SpineXR (folder with train_images/, test_images/, annotations/)
    folder=PATH       your own images: PATH/labels.csv or a .csv file (path, implant, scoliosis, optional boxes)
    coco=FILE         a COCO-JSON detection file (categories named Lum / sco)
    synth             the embedded synthetic set, generated once into the cache and reused (half-size films for
                      a run that keeps 320 px or less, such as the quick profile: ``synth.scale_for``)
    synth=DIR         a folder written by ``python -m spinebench data synth``
    manifest=FILE     a manifest CSV written by ``data manifest``
    hybrid:SPEC       surgical hardware rendered onto the radiographs of SPEC (needs landmarks), e.g.
                      hybrid:aasce=PATH

Each source is a function ``load(arg: str | None) -> list[record]`` registered with :func:`register_source`
(``sized=True``: ``load(arg, max_side=...)``, for a source that renders its images and need not render them larger
than the caller keeps);
wrappers (``hybrid:``) are ``fn(records) -> records`` registered with :func:`register_wrapper`.
"""

from __future__ import annotations

import importlib
import logging
from typing import Callable, Iterable

from spinebench.errors import SpecError

log = logging.getLogger(__name__)

_SOURCES: dict[str, Callable[[str | None], list[dict]]] = {}
_WRAPPERS: dict[str, Callable[[list[dict]], list[dict]]] = {}
_SIZED: set[str] = set()  # sources whose loader takes max_side
# modules that register sources; imported lazily so that `import spinebench` stays light
_SOURCE_MODULES = (
    "spinebench.data.aasce", "spinebench.data.vindr", "spinebench.data.folder",
    "spinebench.data.synth", "spinebench.data.hybrid",
)


def register_source(name: str, sized: bool = False):
    def deco(fn):
        _SOURCES[name] = fn
        if sized:
            _SIZED.add(name)
        return fn
    return deco


def register_wrapper(name: str):
    def deco(fn):
        _WRAPPERS[name] = fn
        return fn
    return deco


def _ensure_registered() -> None:
    for mod in _SOURCE_MODULES:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:  # a source module not written yet must not break the others
            if e.name != mod:
                raise


def source_names() -> list[str]:
    _ensure_registered()
    return sorted(_SOURCES) + [w + ":" for w in sorted(_WRAPPERS)]


def parse_spec(spec: str) -> tuple[list[str], str, str | None]:
    """Split ``hybrid:aasce=PATH`` into (wrappers, kind, arg) = (["hybrid"], "aasce", "PATH")."""
    _ensure_registered()
    if not isinstance(spec, str) or not spec.strip():
        raise SpecError("empty data spec; expected e.g. synth, aasce=PATH, hybrid:aasce=PATH")
    rest = spec.strip()
    wrappers: list[str] = []
    while True:
        head, sep, tail = rest.partition(":")
        if sep and "=" not in head and head in _WRAPPERS:
            wrappers.append(head)
            rest = tail
            continue
        break
    kind, eq, arg = rest.partition("=")
    kind = kind.strip()
    if kind not in _SOURCES:
        known = ", ".join(source_names())
        raise SpecError(f"unknown data source {kind!r} in spec {spec!r}; known: {known}")
    if eq and not arg:
        raise SpecError(f"data spec {spec!r} names no path after '='")
    return wrappers, kind, (arg if eq else None)


def data_kind(spec: str) -> str:
    """``synthetic`` | ``hybrid`` | ``real`` for a data spec (``synth``, ``hybrid:aasce=PATH``, ``aasce=PATH``) or a
    record's ``source`` (where ``hybrid`` is a real radiograph with rendered hardware: ``real``). The one rule for
    what is synthetic: the report and weights records say it plainly, the Cobb scores keep the real films apart."""
    head = str(spec).split("=", 1)[0]
    parts = head.split(":")
    if "hybrid" in parts[:-1]:
        return "hybrid"
    return "synthetic" if parts[-1].strip() == "synth" else "real"


def load_records(specs: str | Iterable[str], max_side: int | None = None) -> list[dict]:
    """Load and concatenate the records of one or several specs; image ids must stay unique.

    ``max_side``: the longest side the caller decodes images to (a run's ``Profile.cache_side``); sources that
    render their images (``synth``) render them no larger than that needs. None: full size.
    """
    if isinstance(specs, str):
        specs = [specs]
    records: list[dict] = []
    for spec in specs:
        wrappers, kind, arg = parse_spec(spec)
        recs = _SOURCES[kind](arg, max_side=max_side) if kind in _SIZED else _SOURCES[kind](arg)
        for w in reversed(wrappers):
            recs = _WRAPPERS[w](recs)
        log.info("%s: %d images", spec, len(recs))
        records.extend(recs)
    seen: set[str] = set()
    for r in records:
        if r["image_id"] in seen:
            raise SpecError(f"image {r['image_id']!r} appears twice; did you name the same source twice?")
        seen.add(r["image_id"])
    return records


@register_source("manifest")
def _load_manifest(arg: str | None) -> list[dict]:
    from spinebench.data.records import read_manifest

    if not arg:
        raise SpecError("manifest=FILE needs the path of a manifest CSV")
    return read_manifest(arg)
