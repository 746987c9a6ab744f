"""Which feature services are model inputs, which features are labels, and the check between them.

Labels are not features: the questionnaire scores of participants.tsv and the response time (and
its per-subject summaries) must never reach a model's inputs. ``feature_repo/`` cannot import this
module (Feast loads it on its own), so it marks its label views with the tag ``role=label``;
:func:`label_feature_names` joins both lists and :func:`check_label_exclusion` refuses an input
service that reaches a label, by view or by field name.
"""

from __future__ import annotations

from collections.abc import Iterable

from featurestore.errors import FeatureStoreError
from pipelines.participants import LABEL_COLUMNS

INPUT_SERVICES: dict[int, str] = {1: "challenge1_inputs_v1", 2: "challenge2_inputs_v1"}
LABEL_SERVICES: dict[int, str] = {1: "challenge1_labels_v1", 2: "challenge2_labels_v1"}
#: Tag by which feature_repo/ marks label views and services (``tags={"role": "label"}``).
ROLE_TAG = "role"
LABEL_ROLE = "label"
#: Feature names that are labels (or derived from a label): never in an input service. This is
#: the one list (feature_repo/ marks its label views with ``role=label`` instead, and
#: :func:`label_feature_names` adds their fields; a test checks both agree): participants.tsv's
#: questionnaire scores, the per-window response time and its per-subject summaries.
LABEL_FEATURES = frozenset(
    {*LABEL_COLUMNS, "response_time", "rt_mean", "rt_median", "rt_std", "n_rt_windows"}
)


def is_label_view(view) -> bool:
    """True when a Feast feature view is tagged ``role=label``."""
    return (view.tags or {}).get(ROLE_TAG) == LABEL_ROLE


def label_feature_names(feature_views: Iterable) -> frozenset[str]:
    """:data:`LABEL_FEATURES` plus every feature of the views tagged ``role=label``."""
    return LABEL_FEATURES | {f.name for v in feature_views if is_label_view(v) for f in v.features}


def check_label_exclusion(feature_services: Iterable, feature_views: Iterable) -> None:
    """Raise when an input service (``INPUT_SERVICES``) holds a label view or a label feature.

    A field of a label view is a label under any view (:func:`label_feature_names`).

    Raises
    ------
    FeatureStoreError
        Naming the service, the view and the label feature(s).
    """
    views = {v.name: v for v in feature_views}
    labels = label_feature_names(views.values())
    for service in feature_services:
        if service.name in INPUT_SERVICES.values():
            _check_input_service(service, views, labels)


def _check_input_service(service, views: dict, labels: frozenset[str]) -> None:
    for projection in service.feature_view_projections:
        view = views.get(projection.name)
        if view is not None and is_label_view(view):
            raise FeatureStoreError(
                f"feature service {service.name!r} includes label view {projection.name!r}; input "
                "services must not contain labels. Fix feature_repo/ definitions"
            )
        leaked = sorted({f.name for f in projection.features} & labels)
        if leaked:
            raise FeatureStoreError(
                f"feature service {service.name!r} includes label feature(s) {leaked} via view "
                f"{projection.name!r}; input services must not contain labels. Fix feature_repo/"
            )


__all__ = [
    "INPUT_SERVICES",
    "LABEL_FEATURES",
    "LABEL_ROLE",
    "LABEL_SERVICES",
    "ROLE_TAG",
    "check_label_exclusion",
    "is_label_view",
    "label_feature_names",
]
