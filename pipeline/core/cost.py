"""The cost model: what a change in requests is worth per month, per node pool.

Requests, not usage, are what a cluster pays for: the scheduler reserves them on a node
whether they are used or not. A change's monthly cost is therefore

    delta = (delta CPU request x $/vCPU-hour + delta memory request x $/GiB-hour)
            x 730 hours x replicas

Defaults are OpenCost's published default on-demand prices, $0.031611 per vCPU-hour and
$0.004237 per GiB-hour (OpenCost's ``defaultCPU`` / ``defaultRAM`` custom pricing,
https://www.opencost.io/docs/configuration/on-prem). Clusters differ (spot, committed
use, on-prem), so prices are configurable globally and per node pool
(:class:`PriceBook`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from pipeline.core.quantity import GIB
from pipeline.errors import ConfigError

HOURS_PER_MONTH: Final = 730.0
"""365 days x 24 hours / 12 months, the convention cloud price sheets use."""


@dataclass(frozen=True, slots=True)
class Prices:
    """Unit prices for one node pool; defaults are OpenCost's default on-demand prices."""

    cpu_core_hour_usd: float = 0.031611
    memory_gib_hour_usd: float = 0.004237
    hours_per_month: float = HOURS_PER_MONTH

    def __post_init__(self) -> None:
        for name in ("cpu_core_hour_usd", "memory_gib_hour_usd", "hours_per_month"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
                raise ConfigError(f"prices: field {name!r} must be a number >= 0, got {value!r}.")

    def monthly_delta_usd(
        self, delta_cpu_cores: float, delta_memory_bytes: int, replicas: int = 1
    ) -> float:
        """Monthly cost of adding (or, if negative, saving) this much CPU and memory.

        >>> round(Prices().monthly_delta_usd(-1.0, 0, replicas=3), 2)
        -69.23
        """
        per_hour = (
            delta_cpu_cores * self.cpu_core_hour_usd
            + delta_memory_bytes / GIB * self.memory_gib_hour_usd
        )
        return per_hour * self.hours_per_month * replicas


DEFAULT_PRICES: Final = Prices()


@dataclass(frozen=True, slots=True)
class PriceBook:
    """Prices for the whole fleet: a default and overrides by node pool name.

    Why: a workload on a spot pool saves less per core than one on on-demand nodes, and a
    team deciding which PR to merge first should see the real figure.
    """

    default: Prices = DEFAULT_PRICES
    node_pools: Mapping[str, Prices] = field(default_factory=dict)

    def for_pool(self, node_pool: str | None) -> Prices:
        """The prices of ``node_pool`` (the default for an unknown or missing pool)."""
        if node_pool is None:
            return self.default
        return self.node_pools.get(node_pool, self.default)
