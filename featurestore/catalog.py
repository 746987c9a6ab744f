"""What a feature service returns: its views, features, value kinds and Redis layout."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from featurestore.errors import FeatureStoreError
from featurestore.feast_adapter import OnlineLayout
from featurestore.repo import ENTITY_KEY
from featurestore.values import feature_kind, numpy_dtype


@dataclass(frozen=True)
class ServiceInfo:
    """One feature service as the client reads it.

    ``features`` lists ``(view, feature, kind)`` in result order (see
    :func:`featurestore.values.feature_kind`); ``views`` maps view names to Feast views;
    ``layout`` says where the online values live. Online values are held in two blocks, numbers
    (float64) and objects: ``slots[j]`` is ``(is_numeric, column)`` of feature ``j`` there.
    """

    name: str
    features: tuple[tuple[str, str, str], ...]
    views: dict[str, Any]
    layout: OnlineLayout
    slots: tuple[tuple[bool, int], ...] = field(init=False)

    def __post_init__(self) -> None:
        counts = [0, 0]  # objects, numbers
        slots = []
        for _, _, kind in self.features:
            numeric = numpy_dtype(kind) is not None
            slots.append((numeric, counts[numeric]))
            counts[numeric] += 1
        object.__setattr__(self, "slots", tuple(slots))

    @property
    def names(self) -> list[str]:
        """Feature names in result order."""
        return [f for _, f, _ in self.features]

    @property
    def kinds(self) -> list[str]:
        return [k for _, _, k in self.features]

    @property
    def n_numeric(self) -> int:
        return sum(numeric for numeric, _ in self.slots)


def load_service(store, service: str) -> ServiceInfo:
    """:class:`ServiceInfo` of ``service`` from ``store``'s registry.

    Raises
    ------
    FeatureStoreError
        Unknown service (the message lists the registered ones), or a view not keyed by
        ``subject_id`` alone.
    """
    try:
        fs = store.get_feature_service(service, allow_cache=True)
    except Exception as exc:
        names = sorted(s.name for s in store.list_feature_services())
        raise FeatureStoreError(
            f"unknown feature service {service!r}; registered: {names}"
        ) from exc
    features, views = [], {}
    for projection in fs.feature_view_projections:
        view = store.get_feature_view(projection.name)
        if list(view.join_keys) != [ENTITY_KEY]:
            raise FeatureStoreError(
                f"view {view.name!r} of service {service!r} is keyed by {list(view.join_keys)}; "
                f"the client reads views keyed by [{ENTITY_KEY!r}] only. Fix feature_repo/"
            )
        views[projection.name] = view
        features += [(projection.name, f.name, feature_kind(f.dtype)) for f in projection.features]
    layout = OnlineLayout(store, ENTITY_KEY, [(views[v], f) for v, f, _ in features])
    return ServiceInfo(service, tuple(features), views, layout)


__all__ = ["ServiceInfo", "load_service"]
