"""Model registry: named models, numbered versions, movable aliases, lineage.

``models`` holds one document per model name::

    {name, description, latest_version, aliases: {"production": 3, "candidate": 4},
     alias_history: [{alias, version, at}], created_at, updated_at}

``model_versions`` one per version::

    {name, version, checkpoint_id, sha256, size_bytes, path, host, gridfs_id, portable,
     lineage: {experiment_id, experiment_name, challenge, epoch, metrics, checkpoint_sha256,
               feature_service, snapshot_id, snapshot_ids, features: {mode, feature_set,
               as_of, n_columns}, data: {n_channels, sfreq, window_samples, crop_samples},
               code_commit, code_dirty, model}, created_at, ...}

The run records its feature service under ``features.service`` (training/features.py);
``lineage.feature_service`` is read from there (older runs wrote ``feature_service``).

Moving an alias is one single-document update, so readers see the old or the new version,
never neither. Registering makes sure the file is in GridFS, so ``load_model`` works on a
machine that never saw the original path.
"""

from __future__ import annotations

import hashlib
import io
import logging
import re
from pathlib import Path
from typing import Any

import gridfs
import pymongo
from bson import ObjectId
from pymongo.database import Database

from services.files import sha256_file
from tracking.errors import ChecksumMismatchError, NotFoundError
from tracking.fetch import fetch_file
from tracking.object_ids import to_object_id
from tracking.schema import CHECKPOINTS, EXPERIMENTS, GRIDFS_BUCKET, MODEL_VERSIONS, MODELS
from tracking.timeutil import utcnow

log = logging.getLogger(__name__)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,99}$")
ALIAS_HISTORY_MAX = 100


def _check_name(value: str, what: str) -> str:
    if not isinstance(value, str) or not _NAME.match(value):
        raise ValueError(
            f"{what} {value!r} is not allowed: use 1-100 letters, digits, '_' or '-', starting "
            "with a letter or digit (e.g. 'eegnex-c2')"
        )
    return value


def _check_alias(alias: str) -> str:
    _check_name(alias, "alias")
    if alias.isdigit():
        raise ValueError(
            f"alias {alias!r} looks like a version number; use a word such as 'production'"
        )
    return alias


def _data_shape(data: dict[str, Any]) -> dict[str, Any]:
    """The shape of the windows a run trained on (what a prediction input must match)."""
    return {k: data.get(k) for k in ("n_channels", "sfreq", "window_samples", "crop_samples")}


#: The run id that names the newest completed run (``eegfs models register --run latest``).
LATEST_RUN = "latest"


class ModelRegistry:
    """Registry operations on one tracking database."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.fs = gridfs.GridFSBucket(db, bucket_name=GRIDFS_BUCKET)

    # --- writing ------------------------------------------------------------------------------
    def best_checkpoint_of(
        self, run_id: str | ObjectId, *, challenge: int | None = None
    ) -> ObjectId:
        """The best checkpoint of run ``run_id``; ``"latest"``: of the newest completed run
        (of ``challenge`` when given).

        The best checkpoint is the one the run's ``best_checkpoint`` field names (see
        :mod:`tracking.best`).
        """
        if run_id == LATEST_RUN:
            query: dict[str, Any] = {"status": "completed", "best_checkpoint.id": {"$exists": True}}
            if challenge is not None:
                query["challenge"] = int(challenge)
            run = self.db[EXPERIMENTS].find_one(
                query, {"best_checkpoint": 1}, sort=[("started_at", pymongo.DESCENDING)]
            )
            if run is None:
                of = "" if challenge is None else f" of challenge {challenge}"
                raise NotFoundError(
                    f"no completed run{of} with a checkpoint yet; train one (`eegfs train`) or "
                    "name a run with --run RUN_ID"
                )
        else:
            oid = to_object_id(run_id, "run id")
            run = self.db[EXPERIMENTS].find_one({"_id": oid}, {"best_checkpoint": 1})
            if run is None:
                raise NotFoundError(f"no run {oid}; list runs with `eegfs runs list`")
            if not (run.get("best_checkpoint") or {}).get("id"):
                raise NotFoundError(
                    f"run {oid} has no best checkpoint (it saved none); name a checkpoint "
                    "instead (`eegfs runs show ID` lists them)"
                )
        return run["best_checkpoint"]["id"]

    def register(
        self,
        name: str,
        checkpoint_id: str | ObjectId,
        *,
        description: str = "",
        aliases: tuple[str, ...] | list[str] = (),
        tags: tuple[str, ...] | list[str] = (),
    ) -> dict[str, Any]:
        """Register a checkpoint as the next version of model ``name``; returns the version.

        Registering the same file (same sha256) under the same name again returns the existing
        version instead of adding one. The file is uploaded to GridFS when it has no copy
        there yet and exists here with the recorded checksum.
        """
        _check_name(name, "model name")
        for alias in aliases:
            _check_alias(alias)
        ckpt_id = to_object_id(checkpoint_id, "checkpoint id")
        ckpt = self.db[CHECKPOINTS].find_one({"_id": ckpt_id})
        if ckpt is None:
            raise NotFoundError(
                f"no checkpoint {ckpt_id}; list a run's checkpoints with `eegfs runs show ID`"
            )
        existing = self.db[MODEL_VERSIONS].find_one({"name": name, "sha256": ckpt.get("sha256")})
        if existing is not None and ckpt.get("sha256"):
            for alias in aliases:
                self.set_alias(name, alias, existing["version"])
            return existing
        exp = self.db[EXPERIMENTS].find_one({"_id": ckpt["experiment_id"]}) or {}
        gridfs_id = self._ensure_gridfs_copy(ckpt)
        now = utcnow()
        model = self.db[MODELS].find_one_and_update(
            {"name": name},
            {
                "$inc": {"latest_version": 1},
                "$set": {"updated_at": now},
                "$setOnInsert": {
                    "description": description,
                    "aliases": {},
                    "alias_history": [],
                    "created_at": now,
                },
            },
            upsert=True,
            return_document=pymongo.ReturnDocument.AFTER,
        )
        features = exp.get("features") or {}
        code = exp.get("code") or {}
        version = {
            "_id": ObjectId(),
            "name": name,
            "version": model["latest_version"],
            "checkpoint_id": ckpt_id,
            "sha256": ckpt.get("sha256"),
            "size_bytes": ckpt.get("size_bytes"),
            "path": ckpt.get("path"),
            "host": ckpt.get("host"),
            "gridfs_id": gridfs_id,
            "portable": gridfs_id is not None,
            "description": description,
            "tags": list(tags),
            "created_at": now,
            "lineage": {
                "experiment_id": ckpt["experiment_id"],
                "experiment_name": exp.get("name"),
                "challenge": exp.get("challenge"),
                "epoch": ckpt.get("epoch"),
                "metrics": ckpt.get("metrics"),
                "checkpoint_sha256": ckpt.get("sha256"),
                "feature_service": features.get("service") or features.get("feature_service"),
                "snapshot_id": features.get("snapshot_id"),
                "snapshot_ids": list(features.get("snapshot_ids") or []),
                "features": {
                    k: features.get(k) for k in ("mode", "feature_set", "as_of", "n_columns")
                },
                "data": _data_shape(exp.get("data") or {}),
                "code_commit": code.get("commit"),
                "code_dirty": code.get("dirty"),
                "model": exp.get("model"),
            },
        }
        self.db[MODEL_VERSIONS].insert_one(version)
        if gridfs_id is None:
            log.warning(
                "model %s v%d is registered without a GridFS copy: %s is not readable here "
                "with its recorded checksum; other machines cannot load it",
                name,
                version["version"],
                ckpt.get("path"),
            )
        for alias in aliases:
            self.set_alias(name, alias, version["version"])
        return version

    def _ensure_gridfs_copy(self, ckpt: dict[str, Any]) -> ObjectId | None:
        file_id = ckpt.get("gridfs_id")
        if file_id is not None and self.db[f"{GRIDFS_BUCKET}.files"].find_one(
            {"_id": file_id}, {"_id": 1}
        ):
            return file_id
        path = Path(ckpt.get("path") or "")
        if not path.is_file() or ckpt.get("sha256") is None or sha256_file(path) != ckpt["sha256"]:
            return None
        file_id = ObjectId()
        with open(path, "rb") as fh:
            self.fs.upload_from_stream_with_id(
                file_id,
                path.name,
                fh,
                metadata={
                    "kind": "checkpoint",
                    "sha256": ckpt["sha256"],
                    "experiment_id": ckpt["experiment_id"],
                    "checkpoint_id": ckpt["_id"],
                },
            )
        self.db[CHECKPOINTS].update_one(
            {"_id": ckpt["_id"]}, {"$set": {"gridfs_id": file_id, "upload_status": "uploaded"}}
        )
        return file_id

    def set_alias(self, name: str, alias: str, version: int) -> None:
        """Point ``alias`` (e.g. ``production``) of model ``name`` at ``version`` (atomic move)."""
        _check_alias(alias)
        version = int(version)
        if self.db[MODEL_VERSIONS].find_one({"name": name, "version": version}, {"_id": 1}) is None:
            raise NotFoundError(
                f"model {name!r} has no version {version}; see `eegfs models show {name}`"
            )
        self.db[MODELS].update_one(
            {"name": name},
            {
                "$set": {f"aliases.{alias}": version, "updated_at": utcnow()},
                "$push": {
                    "alias_history": {
                        "$each": [{"alias": alias, "version": version, "at": utcnow()}],
                        "$slice": -ALIAS_HISTORY_MAX,
                    }
                },
            },
        )

    def delete_alias(self, name: str, alias: str) -> None:
        """Remove ``alias`` from model ``name``."""
        result = self.db[MODELS].update_one(
            {"name": name, f"aliases.{alias}": {"$exists": True}},
            {"$unset": {f"aliases.{alias}": ""}},
        )
        if result.matched_count == 0:
            raise NotFoundError(f"model {name!r} has no alias {alias!r}")

    # --- reading ------------------------------------------------------------------------------
    def get_model(self, name: str) -> dict[str, Any]:
        model = self.db[MODELS].find_one({"name": name})
        if model is None:
            known = sorted(self.db[MODELS].distinct("name"))
            raise NotFoundError(
                f"no registered model {name!r}; registered: {', '.join(known) or 'none'}"
            )
        return model

    def get_version(self, name: str, alias_or_version: str | int) -> dict[str, Any]:
        """A version by number (``3`` or ``"3"``), ``"latest"``, or alias (``"production"``)."""
        model = self.get_model(name)
        if isinstance(alias_or_version, int) or str(alias_or_version).isdigit():
            number = int(alias_or_version)
        elif alias_or_version == "latest":
            number = model["latest_version"]
        else:
            aliases = model.get("aliases") or {}
            if alias_or_version not in aliases:
                raise NotFoundError(
                    f"model {name!r} has no alias {alias_or_version!r}; aliases: "
                    f"{', '.join(f'{a}->v{v}' for a, v in sorted(aliases.items())) or 'none'}"
                )
            number = aliases[alias_or_version]
        version = self.db[MODEL_VERSIONS].find_one({"name": name, "version": number})
        if version is None:
            raise NotFoundError(
                f"model {name!r} has no version {number} (latest is {model['latest_version']})"
            )
        version["aliases"] = sorted(
            a for a, v in (model.get("aliases") or {}).items() if v == number
        )
        return version

    def list_models(self) -> list[dict[str, Any]]:
        return list(self.db[MODELS].find({}, {"alias_history": 0}).sort("name", 1))

    def list_versions(self, name: str) -> list[dict[str, Any]]:
        model = self.get_model(name)
        by_version: dict[int, list[str]] = {}
        for alias, number in (model.get("aliases") or {}).items():
            by_version.setdefault(number, []).append(alias)
        versions = list(self.db[MODEL_VERSIONS].find({"name": name}).sort("version", 1))
        for v in versions:
            v["aliases"] = sorted(by_version.get(v["version"], []))
        return versions

    # --- loading ------------------------------------------------------------------------------
    def fetch(self, name: str, alias_or_version: str | int, dest: Path) -> Path:
        """A verified local file of the version (the original path, or a GridFS download in ``dest``)."""
        version = self.get_version(name, alias_or_version)
        filename = f"{name}-v{version['version']}-{Path(version['path'] or 'model.pt').name}"
        return fetch_file(
            self.db,
            path=version["path"] or "",
            sha256=version["sha256"],
            gridfs_id=version.get("gridfs_id"),
            dest=Path(dest) / filename,
            label=f"model {name} v{version['version']}",
        )

    def load_model(
        self, name: str, alias_or_version: str | int, dest: Path, *, map_location: str = "cpu"
    ):
        """Load the version's torch weights (``weights_only=True``) after checking their sha256.

        The bytes are read once, hashed and loaded from memory, so the file cannot change between
        the check and the load. Returns what ``torch.load`` returns (usually a state dict).
        """
        import torch  # lazy: only loading models needs torch

        version = self.get_version(name, alias_or_version)
        path = self.fetch(name, alias_or_version, dest)
        data = Path(path).read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        if version["sha256"] is not None and digest != version["sha256"]:
            raise ChecksumMismatchError(
                f"model {name} v{version['version']}: {path} has sha256 {digest}, expected "
                f"{version['sha256']}; the file changed after it was checked. Delete it and retry"
            )
        return torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
