"""Feast definitions of the EEG feature store: entity, sources, views, services (in that order).

Feast imports every .py file of this directory on ``feast apply``: keep only definitions here
(and nothing of the project's own packages).

Source paths are relative to this directory and point at the default data directory
(``../data/features``); the ``eegfs_table`` tag names the table relative to any features
directory, which is how ``eegfs features apply`` (featurestore.materialize) points the same
definitions at ``$EEGFS_DATA_DIR/features``.

Timestamps: ``event_timestamp`` is the time the snapshot that holds the row was built, i.e. the
moment from which the store offers those values; ``created`` breaks ties (a ``--force`` rebuild).
The TTL is ten years: subject features do not expire, and a first ``feast
materialize-incremental`` looks back one TTL, so this keeps Redis from coming up empty.

Every view reads its rows through a push source (``<view>_push``) backed by its file source:
``feast materialize`` reads the file source, and ``eegfs features push`` writes one new
snapshot's rows to the online store with ``FeatureStore.push(..., to=PushMode.ONLINE)``.

Labels are views tagged ``role=label``: no input service may include such a view, nor any of its
feature names through another view (``eegfs features apply`` and ``eegfs doctor`` refuse it).
"""

from datetime import timedelta

from feast import Entity, FeatureService, FeatureView, Field, FileSource, PushSource
from feast.types import Array, Float32, Float64, Int64, String
from feast.value_type import ValueType

BANDS = ("delta", "theta", "alpha", "beta", "gamma")
FEATURES_DIR = "../data/features"
TTL = timedelta(days=3650)

# The subject (HBN participant), keyed by the canonical id "NDARxxxx" without "sub-".
subject = Entity(
    name="subject",
    join_keys=["subject_id"],
    value_type=ValueType.STRING,
    description="HBN participant, canonical id NDARxxxx (no 'sub-' prefix)",
)


def _source(name: str, table: str, description: str) -> FileSource:
    return FileSource(
        name=name,
        path=f"{FEATURES_DIR}/{table}",
        timestamp_field="event_timestamp",
        created_timestamp_column="created",
        description=description,
        tags={"eegfs_table": table},
    )


def _subject_features_source(challenge: int) -> FileSource:
    """Band-power aggregates per subject and snapshot from one challenge's windows."""
    return _source(
        f"subject_features_c{challenge}_source",
        f"subject_features/challenge{challenge}",
        f"per-subject band-power aggregates over good Challenge {challenge} windows",
    )


# Band-power aggregates per subject and snapshot, from Challenge 1 (2 s task) windows.
subject_features_c1_source = _subject_features_source(1)
# Band-power aggregates per subject and snapshot, from Challenge 2 (4 s) windows.
subject_features_c2_source = _subject_features_source(2)
# Demographics from participants.tsv.
subject_demographics_source = _source(
    "subject_demographics_source",
    "subject_demographics",
    "age, sex, ehq_total from participants.tsv",
)
# Questionnaire scores from participants.tsv (labels).
subject_labels_source = _source(
    "subject_labels_source", "subject_labels", "p_factor and CBCL factor scores (labels)"
)
# Response-time summaries of each subject's Challenge 1 windows (labels).
subject_rt_labels_source = _source(
    "subject_rt_labels_source",
    "subject_rt_labels/challenge1",
    "per-subject response-time summaries from Challenge 1 windows (labels)",
)


def _push(view: str, batch_source: FileSource) -> PushSource:
    """The push source of ``view``: new rows go online directly; its file source backs it."""
    return PushSource(
        name=f"{view}_push",
        batch_source=batch_source,
        description=f"rows of one new snapshot pushed online ({batch_source.name})",
    )


# Push sources, one per view (eegfs features push).
subject_bandpower_c1_push = _push("subject_bandpower_c1", subject_features_c1_source)
subject_bandpower_c2_push = _push("subject_bandpower_c2", subject_features_c2_source)
subject_demographics_push = _push("subject_demographics", subject_demographics_source)
subject_labels_push = _push("subject_labels", subject_labels_source)
subject_rt_labels_push = _push("subject_rt_labels", subject_rt_labels_source)


def _bandpower_schema() -> list[Field]:
    fields = [
        Field(name="n_windows", dtype=Int64, description="windows of the subject in the file"),
        Field(
            name="n_good_windows", dtype=Int64, description="finite windows with few flat channels"
        ),
        Field(name="good_fraction", dtype=Float32, description="n_good_windows / n_windows"),
    ]
    for b in BANDS:
        fields += [
            Field(
                name=f"logabs_mean_{b}",
                dtype=Float32,
                description=f"mean over channels of log10 {b} power (uV^2)",
            ),
            Field(
                name=f"logabs_std_{b}",
                dtype=Float32,
                description=f"std over channels of log10 {b} power",
            ),
            Field(name=f"rel_mean_{b}", dtype=Float32, description=f"mean relative {b} power"),
            Field(
                name=f"rel_median_{b}",
                dtype=Float32,
                description=f"median over windows of relative {b} power",
            ),
        ]
    fields.append(
        Field(
            name="spectral_entropy_mean", dtype=Float32, description="mean spectral entropy (0..1)"
        )
    )
    fields += [
        Field(
            name=f"chan_rel_{b}",
            dtype=Array(Float32),
            description=f"per-channel mean relative {b} power",
        )
        for b in BANDS
    ]
    return fields


def _bandpower_view(challenge: int, source: PushSource) -> FeatureView:
    """The band-power input view of one challenge (the same schema for both)."""
    return FeatureView(
        name=f"subject_bandpower_c{challenge}",
        entities=[subject],
        ttl=TTL,
        schema=_bandpower_schema(),
        online=True,
        source=source,
        description=f"band-power aggregates over each subject's good Challenge {challenge} windows",
        tags={"role": "input", "challenge": str(challenge)},
    )


# Challenge 1 band-power features per subject.
subject_bandpower_c1_fv = _bandpower_view(1, subject_bandpower_c1_push)
# Challenge 2 band-power features per subject.
subject_bandpower_c2_fv = _bandpower_view(2, subject_bandpower_c2_push)
# Demographics (inputs).
subject_demographics_fv = FeatureView(
    name="subject_demographics",
    entities=[subject],
    ttl=TTL,
    schema=[
        Field(name="age", dtype=Float64, description="age in years"),
        Field(name="sex", dtype=String, description="M or F as in participants.tsv"),
        Field(name="ehq_total", dtype=Float64, description="Edinburgh handedness score"),
    ],
    online=True,
    source=subject_demographics_push,
    description="demographics from participants.tsv",
    tags={"role": "input"},
)
# Questionnaire labels: never part of an input service.
subject_labels_fv = FeatureView(
    name="subject_labels",
    entities=[subject],
    ttl=TTL,
    schema=[
        Field(name="p_factor", dtype=Float64),
        Field(name="attention", dtype=Float64),
        Field(name="internalizing", dtype=Float64),
        Field(name="externalizing", dtype=Float64),
    ],
    online=True,
    source=subject_labels_push,
    description="psychopathology factor scores (Challenge 2 targets): labels, not inputs",
    tags={"role": "label"},
)
# Response-time labels: never part of an input service.
subject_rt_labels_fv = FeatureView(
    name="subject_rt_labels",
    entities=[subject],
    ttl=TTL,
    schema=[
        Field(name="rt_mean", dtype=Float64, description="mean response time (s)"),
        Field(name="rt_median", dtype=Float64, description="median response time (s)"),
        Field(name="rt_std", dtype=Float64, description="std of response time (s)"),
        Field(name="n_rt_windows", dtype=Int64, description="windows with a finite response time"),
    ],
    online=True,
    source=subject_rt_labels_push,
    description="response-time summaries (Challenge 1 target): labels, not inputs",
    tags={"role": "label", "challenge": "1"},
)


def _inputs_service(challenge: int, bandpower: FeatureView) -> FeatureService:
    """Model inputs of one challenge: its band power + demographics (no label view)."""
    return FeatureService(
        name=f"challenge{challenge}_inputs_v1",
        features=[bandpower, subject_demographics_fv],
        description=f"Challenge {challenge} model inputs (no labels)",
        tags={"role": "input", "challenge": str(challenge)},
    )


# Model inputs for Challenge 1: task band power + demographics.
challenge1_inputs_v1 = _inputs_service(1, subject_bandpower_c1_fv)
# Model inputs for Challenge 2: band power + demographics.
challenge2_inputs_v1 = _inputs_service(2, subject_bandpower_c2_fv)
# Labels for Challenge 1 (response time).
challenge1_labels_v1 = FeatureService(
    name="challenge1_labels_v1",
    features=[subject_rt_labels_fv],
    description="Challenge 1 labels",
    tags={"role": "label", "challenge": "1"},
)
# Labels for Challenge 2 (p_factor, externalizing, ...).
challenge2_labels_v1 = FeatureService(
    name="challenge2_labels_v1",
    features=[subject_labels_fv],
    description="Challenge 2 labels",
    tags={"role": "label", "challenge": "2"},
)
