"""Registry of task domains: ``make_domain("sinusoid", k_support=5)``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dmaml_core.plugins import check_domain
from dmaml_core.registry import build
from dmaml_core.rl.domain import Navigation
from dmaml_core.tasks.base import Domain
from dmaml_core.tasks.miniimagenet import MiniImageNet
from dmaml_core.tasks.omniglot import Omniglot
from dmaml_core.tasks.random_images import RandomImages
from dmaml_core.tasks.sinusoid import Sinusoid

DOMAINS: dict[str, Callable[..., Domain]] = {
    "sinusoid": Sinusoid,
    "random_images": RandomImages,
    "navigation": Navigation,
    "omniglot": Omniglot,
    "miniimagenet": MiniImageNet,
}


def make_domain(name: str, **params: Any) -> Domain:
    """A built-in domain by name, or a plug-in (``module:Class`` or an entry point of group
    ``dmaml_bench.domains``), checked against the domain protocol."""
    domain = build("domain", DOMAINS, name, params)
    check_domain(name, domain)
    return domain
