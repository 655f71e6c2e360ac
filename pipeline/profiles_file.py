"""Profiles file: custom profiles, namespace defaults and prices, read from YAML.

Teams keep their intent next to their manifests. One file holds it all::

    profiles:
      - name: checkout-critical        # a lowercase DNS label
        extends: performance-first     # a built-in or a profile defined above it
        cpu_headroom: 0.5
      - name: batch
        extends: cost-optimized
        proposal_cooldown_seconds: 86400
    namespace_defaults:                # workloads without a daytwo.io/profile annotation
      dev: cost-optimized
      shop: checkout-critical
    default_profile: balanced          # everything else
    prices:                            # optional; OpenCost's defaults otherwise
      cpu_core_hour_usd: 0.031611
      memory_gib_hour_usd: 0.004237
      node_pools:
        spot: {cpu_core_hour_usd: 0.0095, memory_gib_hour_usd: 0.0013}

Every error names the file, the profile, the field and the allowed range
(:func:`pipeline.core.profiles.profile_from_mapping`); unknown top-level keys are errors
too, so a typo never silently falls back to a default.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from pipeline.core.cost import DEFAULT_PRICES, PriceBook, Prices
from pipeline.core.profiles import (
    BUILTIN_PROFILES,
    DEFAULT_PROFILE_NAME,
    Profile,
    assign_profile,
    get_profile,
    profile_from_mapping,
)
from pipeline.errors import ConfigError

TOP_LEVEL_KEYS: Final = ("profiles", "namespace_defaults", "default_profile", "prices")
PRICE_KEYS: Final = ("cpu_core_hour_usd", "memory_gib_hour_usd", "node_pools")
MAX_FILE_BYTES: Final = 1024 * 1024


@dataclass(frozen=True, slots=True)
class ProfileCatalog:
    """Every profile an installation knows and how workloads are assigned to them."""

    custom: Mapping[str, Profile] = field(default_factory=dict)
    namespace_defaults: Mapping[str, str] = field(default_factory=dict)
    default_profile: str = DEFAULT_PROFILE_NAME
    prices: PriceBook = field(default_factory=PriceBook)

    def get(self, name: str) -> Profile:
        """A profile by name, custom or built in (:class:`ConfigError` if unknown)."""
        return get_profile(name, self.custom)

    def for_workload(self, workload: str, annotations: Mapping[str, str] | None = None) -> Profile:
        """The profile of a workload id ``cluster/namespace/kind/name``: its annotation,
        else its namespace's default, else the catalog's default."""
        parts = workload.split("/")
        namespace = parts[1] if len(parts) == 4 else ""
        return self.get(
            assign_profile(annotations, namespace, self.namespace_defaults, self.default_profile)
        )


class ProfileResolver:
    """Profiles by workload, with the same field overrides applied to every profile.

    Why: a demo or a test runs every profile faster (``DAYTWO_PROFILE_OVERRIDES``,
    ``DAYTWO_MIN_SAMPLES``) without a profiles file; overrides are validated for every
    known profile at construction, so a bad one fails at start, not at the first sample.
    """

    def __init__(self, catalog: ProfileCatalog, overrides: Mapping[str, object]) -> None:
        self.catalog = catalog
        self._overrides = dict(overrides)
        self._resolved: dict[str, Profile] = {}
        for name in (*BUILTIN_PROFILES, *catalog.custom):
            self._apply(catalog.get(name))

    def default(self) -> Profile:
        """The profile of workloads with no annotation and no namespace default."""
        return self._apply(self.catalog.get(self.catalog.default_profile))

    def for_workload(self, workload: str, annotations: Mapping[str, str] | None = None) -> Profile:
        """See :meth:`ProfileCatalog.for_workload`; with the overrides applied."""
        return self._apply(self.catalog.for_workload(workload, annotations))

    def for_spec(self, workload: str, spec_profile: str | None) -> Profile:
        """The profile a workload spec names (the inventory resolved the annotation and
        the namespace default), else the catalog's assignment for the workload id."""
        if spec_profile is None:
            return self.for_workload(workload)
        return self._apply(self.catalog.get(spec_profile))

    def _apply(self, base: Profile) -> Profile:
        resolved = self._resolved.get(base.name)
        if resolved is None:
            resolved = (
                base.overridden(self._overrides, "profile overrides") if self._overrides else base
            )
            self._resolved[base.name] = resolved
        return resolved


def load_catalog(path: Path | None, *, default_profile: str | None = None) -> ProfileCatalog:
    """Read a profiles file (None: built-ins only); ``default_profile`` overrides the file's."""
    catalog = ProfileCatalog() if path is None else parse_catalog(_read(path), source=str(path))
    if default_profile is not None:
        catalog = ProfileCatalog(
            catalog.custom, catalog.namespace_defaults, default_profile, catalog.prices
        )
    catalog.get(catalog.default_profile)  # fails early, naming the known profiles
    return catalog


def parse_catalog(data: object, *, source: str) -> ProfileCatalog:
    """Validate a parsed profiles document (see the module docstring for its shape)."""
    if data is None:
        return ProfileCatalog()
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: the profiles file must be a mapping with {TOP_LEVEL_KEYS}.")
    unknown = sorted(str(k) for k in data if k not in TOP_LEVEL_KEYS)
    if unknown:
        raise ConfigError(
            f"{source}: unknown key(s) {unknown}; the file may hold {', '.join(TOP_LEVEL_KEYS)}."
        )
    entries = data.get("profiles") or []
    if not isinstance(entries, list):
        raise ConfigError(f"{source}: 'profiles' must be a list of profile mappings.")
    custom: dict[str, Profile] = {}
    for index, entry in enumerate(entries):
        profile = profile_from_mapping(entry, source=f"{source}: profiles[{index}]", known=custom)
        if profile.name in custom:
            raise ConfigError(f"{source}: profile {profile.name!r} is defined twice.")
        custom[profile.name] = profile
    known = {**BUILTIN_PROFILES, **custom}
    defaults = data.get("namespace_defaults") or {}
    if not isinstance(defaults, Mapping):
        raise ConfigError(f"{source}: 'namespace_defaults' must map namespace -> profile name.")
    namespace_defaults: dict[str, str] = {}
    for namespace, name in defaults.items():
        if name not in known:
            raise ConfigError(
                f"{source}: namespace_defaults[{namespace!r}]: unknown profile {name!r}; known "
                f"profiles are {sorted(known)}."
            )
        namespace_defaults[str(namespace)] = str(name)
    default_profile = data.get("default_profile", DEFAULT_PROFILE_NAME)
    if default_profile not in known:
        raise ConfigError(
            f"{source}: default_profile: unknown profile {default_profile!r}; known profiles "
            f"are {sorted(known)}."
        )
    return ProfileCatalog(
        custom, namespace_defaults, str(default_profile), _prices(data.get("prices"), source)
    )


def _prices(data: object, source: str) -> PriceBook:
    if data is None:
        return PriceBook()
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: 'prices' must be a mapping with {PRICE_KEYS}.")
    unknown = sorted(str(k) for k in data if k not in PRICE_KEYS)
    if unknown:
        raise ConfigError(f"{source}: prices: unknown key(s) {unknown}; known: {PRICE_KEYS}.")
    default = _unit_prices(
        {k: v for k, v in data.items() if k != "node_pools"}, DEFAULT_PRICES, f"{source}: prices"
    )
    pools = data.get("node_pools") or {}
    if not isinstance(pools, Mapping):
        raise ConfigError(f"{source}: prices.node_pools must map pool name -> prices.")
    return PriceBook(
        default,
        {
            str(name): _unit_prices(value, default, f"{source}: prices.node_pools[{name!r}]")
            for name, value in pools.items()
        },
    )


def _unit_prices(data: object, base: Prices, where: str) -> Prices:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: must be a mapping of cpu_core_hour_usd, memory_gib_hour_usd.")
    allowed = ("cpu_core_hour_usd", "memory_gib_hour_usd")
    unknown = sorted(str(k) for k in data if k not in allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; known: {allowed}.")
    try:
        return Prices(
            cpu_core_hour_usd=data.get("cpu_core_hour_usd", base.cpu_core_hour_usd),
            memory_gib_hour_usd=data.get("memory_gib_hour_usd", base.memory_gib_hour_usd),
        )
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _read(path: Path) -> object:
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ConfigError(f"{path}: profiles file is {size} bytes; the limit is 1 MiB.")
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read profiles file {path}: {exc}") from exc
    yaml = YAML(typ="safe", pure=True)  # safe: no Python tags; pure: no C loader quirks
    try:
        return yaml.load(text)
    except YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
