"""Whether a trained model, or a running deployment, still matches OUTPUT's data.

``make data`` never deletes a model or a deployment record: those are the user's (and a
SageMaker endpoint costs money until undeployed). New data can make them stale instead —
other users, items or feature_dim — so every model records the data it was trained on
(:func:`data_stamp`), predict and deploy refuse a stale one (:func:`check_model`), and
``make data`` says what its new output made stale (:func:`stale_notes`).
"""

from __future__ import annotations

from . import config, storage
from .config import MANIFEST
from .errors import FmprepError, aside, command, setting


def data_stamp(manifest: dict) -> dict:
    """What identifies OUTPUT's data for a model trained on it: the encode key and feature_dim."""
    return {"key": manifest.get("key"), "feature_dim": int(manifest["feature_dim"])}


def stale_reason(trained_on: dict | None, manifest: dict) -> str | None:
    """Why a model trained on ``trained_on`` does not fit ``manifest``'s data, or None.

    A model without a stamp (an older fmprep's) is judged by feature_dim alone.
    """
    now = data_stamp(manifest)
    if not trained_on:
        return None
    if trained_on.get("feature_dim") not in (None, now["feature_dim"]):
        return (f"it has feature_dim {trained_on['feature_dim']}, the data now has "
                f"{now['feature_dim']}")
    if trained_on.get("key") and now["key"] and trained_on["key"] != now["key"]:
        return f"{command('data')} has rebuilt the data since (other ids or rows)"
    return None


def check_model(model_meta: dict, manifest: dict, where: str) -> None:
    """Refuse a model trained on other data than OUTPUT's, with one line naming make train.

    Parameters
    ----------
    model_meta : dict
        The model's ``model.json`` (local) or the training job's record (SageMaker); its
        ``data`` entry is the :func:`data_stamp` it was trained on.
    manifest : dict
        OUTPUT's manifest.
    where : str
        The model's location, for the message.
    """
    trained_on = dict(model_meta.get("data") or {})
    trained_on.setdefault("feature_dim", model_meta.get("feature_dim"))
    reason = stale_reason(trained_on, manifest)
    if reason:
        raise FmprepError(f"the model in {where} was trained on earlier data ({reason}); run "
                          f"{command('train')} first")


def stale_notes(output: str, manifest: dict, storage_options: dict | None = None) -> list[str]:
    """One line per model or deployment under ``output`` that new data has made stale."""
    notes = []
    model_dir = storage.join(output, config.LOCAL_MODEL_DIR)
    meta = storage.read_json(storage.join(model_dir, "model.json"), storage_options)
    if meta is not None:
        trained_on = dict(meta.get("data") or {})
        trained_on.setdefault("feature_dim", meta.get("feature_dim"))
        reason = stale_reason(trained_on, manifest)
        if reason:
            notes.append(f"the model in {model_dir} was trained on earlier data ({reason}); "
                         f"predict and deploy refuse it until you run {command('train')}")
    local = storage.read_json(storage.join(output, config.ENDPOINT_RECORD), storage_options)
    if local is not None and stale_reason(local.get("data"), manifest):
        notes.append(f"the local server at {local.get('url')} (pid {local.get('pid')}) still "
                     f"serves a model of earlier data; {command('undeploy')}, "
                     f"{command('train')}, {command('deploy')}")
    record = storage.read_json(storage.join(output, config.SAGEMAKER_RECORD), storage_options)
    endpoint = (record or {}).get("endpoint")
    if endpoint and stale_reason(endpoint.get("data"), manifest):
        notes.append(f"SageMaker endpoint {endpoint.get('name')} still serves a model of "
                     f"earlier data (and is billed); {command('undeploy')} "
                     f"{setting('backend')}sagemaker, then "
                     "train and deploy again")
    return notes


def read_manifest(output: str, storage_options: dict | None = None) -> dict:
    """OUTPUT's manifest, or one line naming make data."""
    manifest = storage.read_json(storage.join(output, MANIFEST), storage_options)
    if manifest is None:
        raise FmprepError(f"no {MANIFEST} in {output}; run {command('data')} first (or pass "
                          f"{setting('output')}{aside('output')})")
    return manifest


def trained_artifact(output: str, fix: str, storage_options: dict | None = None,
                     manifest: dict | None = None) -> tuple[dict, str]:
    """The completed SageMaker training job recorded beside OUTPUT, and its model artifact.

    Parameters
    ----------
    output : str
        OUTPUT, whose ``sagemaker.json`` records the job (``make train BACKEND=sagemaker``).
    fix : str
        What to do when there is no completed job, ending the one-line error.
    storage_options : dict, optional
    manifest : dict, optional
        OUTPUT's manifest, when the caller has read it (read here otherwise).

    Returns
    -------
    job : dict
        The job's record.
    artifact : str
        Its ``model.tar.gz`` URL.

    Raises
    ------
    FmprepError
        Without a completed job, or for one trained on other data than OUTPUT's.
    """
    where = storage.join(output, config.SAGEMAKER_RECORD)
    job = (storage.read_json(where, storage_options) or {}).get("training_job") or {}
    if job.get("status") != "Completed" or not job.get("model_artifact"):
        raise FmprepError(f"no completed SageMaker training job recorded in {where}; {fix}")
    artifact = job["model_artifact"]
    if manifest is None:
        manifest = storage.read_json(storage.join(output, MANIFEST), storage_options)
    if manifest is not None:
        check_model({"data": job.get("data")}, manifest,
                    f"training job {job.get('name')} ({artifact})")
    return job, artifact
