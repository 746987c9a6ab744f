"""The feature-store client: Feast apply and materialize, online and historical retrieval.

Modules, each with one job:

* :mod:`featurestore.client`: :class:`~featurestore.client.FeatureStoreClient`, the facade.
* :mod:`featurestore.labels`: input and label services, label names, the no-label check.
* :mod:`featurestore.repo`: ``feature_repo/`` loading and the Feast configuration.
* :mod:`featurestore.catalog`: what a feature service returns.
* :mod:`featurestore.values`: value kinds and the NaN convention.
* :mod:`featurestore.online`: online reads from Redis and the in-process cache.
* :mod:`featurestore.historical`: point-in-time frames from the Parquet snapshots.
* :mod:`featurestore.matrices`: float32 matrices of features.
* :mod:`featurestore.materialize` / :mod:`featurestore.marker`: apply, materialize, the marker.
* :mod:`featurestore.push`: push one new file (its snapshot, its rows online).
* :mod:`featurestore.connection`: the Redis client and what its failures mean.
* :mod:`featurestore.commands` / :mod:`featurestore.shell_env`: what the CLI commands call.
* :mod:`featurestore.feast_adapter`: every use of Feast's private or unstable API.
* :mod:`featurestore.errors`: :class:`~featurestore.errors.FeatureStoreError`.

Import from the modules (``from featurestore.client import FeatureStoreClient``): importing this
package loads neither Feast nor Redis.
"""
