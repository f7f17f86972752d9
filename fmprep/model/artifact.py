"""SageMaker Factorization Machines model artifacts, read without MXNet.

A SageMaker FM training job leaves ``model.tar.gz`` holding one member, ``model_algo-1``, itself a
zip archive of ``symbol.json`` (the MXNet graph) and ``params`` (the weights, an MXNet NDArray
file as written by ``mx.nd.save``). ``params`` holds ``arg:w0_weight`` (1,), ``arg:w1_weight``
(feature_dim, 1) and ``arg:v`` (feature_dim, num_factors), float32; the regressor's score is
``w0 + sum_i w_i x_i + sum_{i<j} <v_i, v_j> x_i x_j`` (``binary_classifier``: its sigmoid), the
model of :class:`fmprep.model.fm.FMModel`, which :func:`load_fm_artifact` returns.

MXNet 1.x is unmaintained and needs ``numpy<1.24``, so fmprep parses the NDArray file itself.
Layout (little-endian, as MXNet writes on every platform it ships for)::

    file    := uint64 0x112, uint64 reserved, uint64 n, ndarray * n,
               uint64 m, (uint64 len, len bytes of name) * m        (m is 0 or n)
    ndarray := uint32 magic, then by magic:
      0xF993fac9 (V2) / 0xF993faca (V3, numpy shape semantics):
               int32 storage type (0 dense; 1 row_sparse, 2 csr carry extra arrays),
               shape, [ none: stop ], int32 dev_type, int32 dev_id, int32 type flag, data
      0xF993fac8 (V1): shape, [ none: stop ], context, int32 type flag, data
      other (shape-first, pre-V1): the magic is ndim, then ndim uint32 dims, context, flag, data
    shape   := int32 ndim, int64 dim * ndim
    data    := prod(shape) elements of the type flag's dtype, C order

A shape is "none" (an uninitialised array, nothing after it) when ndim is 0 in the legacy
semantics (V1/V2 and older) and -1 in numpy semantics (V3, where ndim 0 is a scalar).
"""

from __future__ import annotations

import gzip
import io
import json
import struct
import tarfile
import zipfile
import zlib

import numpy as np

from .. import storage
from ..errors import FmprepError, command, setting
from .hyperparameters import PREDICTOR_TYPES

__all__ = ["read_ndarray_file", "read_fm_artifact", "load_fm_artifact", "artifact_predictor_type"]

_LIST_MAGIC = 0x112
_LIST_BYTES = struct.pack("<Q", _LIST_MAGIC)
_V1_MAGIC = 0xF993FAC8
_V2_MAGIC = 0xF993FAC9
_V3_MAGIC = 0xF993FACA

# mshadow type flags -> numpy dtypes (little-endian). 7 (bool) exists in MXNet >= 1.6.
_DTYPES = {0: "<f4", 1: "<f8", 2: "<f2", 3: "u1", 4: "<i4", 5: "i1", 6: "<i8", 7: "?"}
_STORAGE = {1: "row_sparse", 2: "csr"}

# The parameter names in SageMaker FM's params, as MXNet's checkpoint writes them ("arg:" prefix).
_FM_KEYS = ("w0_weight", "w1_weight", "v")

_FIX_FILE = "pass the model.tar.gz of a SageMaker Factorization Machines training job"


class _Reader:
    """A cursor over bytes whose reads fail with FmprepError, never with struct.error."""

    def __init__(self, data: bytes, what: str):
        self.buf = memoryview(data)
        self.pos = 0
        self.what = what

    def remaining(self) -> int:
        return len(self.buf) - self.pos

    def take(self, n: int, field: str) -> memoryview:
        if n < 0 or n > self.remaining():
            raise FmprepError(f"{self.what} is truncated: {field} needs {n} bytes at offset "
                              f"{self.pos}, {self.remaining()} left; download the artifact "
                              "again (a partial copy) or " + _FIX_FILE)
        out = self.buf[self.pos:self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str, field: str):
        size = struct.calcsize(fmt)
        return struct.unpack(fmt, self.take(size, field))

    def u64(self, field: str) -> int:
        return self.unpack("<Q", field)[0]


def _shape(r: _Reader, field: str) -> tuple[int, ...] | None:
    """int32 ndim + int64 dims; ndim -1 (unknown) is returned as None."""
    (ndim,) = r.unpack("<i", f"{field} ndim")
    if ndim == -1:
        return None
    if ndim < -1 or ndim > 32:
        # MXNet caps ndim far below this; a wild value means we are reading garbage.
        raise FmprepError(f"{r.what}: {field} has ndim {ndim} at offset {r.pos - 4}; the file is "
                          f"corrupt or not an MXNet NDArray file; {_FIX_FILE}")
    dims = r.unpack(f"<{ndim}q", f"{field} dims")
    if any(d < 0 for d in dims):
        raise FmprepError(f"{r.what}: {field} has an unknown dimension {dims}; the array was "
                          f"saved before its shape was inferred; {_FIX_FILE}")
    return dims


def _data(r: _Reader, shape: tuple[int, ...], field: str) -> np.ndarray:
    """Context, type flag and the raw elements of one dense array."""
    r.unpack("<ii", f"{field} context")  # dev_type, dev_id: where it lived; we load on CPU
    (flag,) = r.unpack("<i", f"{field} type flag")
    if flag not in _DTYPES:
        raise FmprepError(f"{r.what}: {field} has MXNet type flag {flag}, which fmprep does not "
                          "read (float32/64/16, int8/32/64, uint8, bool); cast the array to "
                          "float32 before mx.nd.save")
    dtype = np.dtype(_DTYPES[flag])
    count = 1
    for d in shape:  # Python ints: a corrupt shape cannot overflow into a small size
        count *= d
    raw = r.take(count * dtype.itemsize, f"{field} data ({count} x {dtype.name})")
    # astype copies: own, writable, native-order memory, not a view pinning the whole file.
    out = np.frombuffer(raw, dtype=dtype, count=count).astype(dtype.newbyteorder("="))
    return out.reshape(shape)


def _ndarray(r: _Reader, index: int) -> np.ndarray:
    field = f"array {index}"
    (magic,) = r.unpack("<I", f"{field} magic")
    if magic in (_V2_MAGIC, _V3_MAGIC):
        (stype,) = r.unpack("<i", f"{field} storage type")
        if stype != 0:
            kind = _STORAGE.get(stype, f"storage type {stype}")
            raise FmprepError(f"{r.what}: {field} is a {kind} array, fmprep reads dense arrays "
                              "only; save it with .tostype('default') first")
        shape = _shape(r, f"{field} shape")
        # Legacy semantics (V2) mark an uninitialised array with ndim 0, numpy's (V3) with -1.
        none = shape is None or (magic == _V2_MAGIC and len(shape) == 0)
    elif magic == _V1_MAGIC:
        shape = _shape(r, f"{field} shape")
        none = shape is None or len(shape) == 0
    else:
        # Before V1 there was no magic: the first word is ndim and the dims are uint32.
        ndim = magic
        if ndim > 32:
            raise FmprepError(f"{r.what}: {field} starts with 0x{magic:08x}, no known MXNet "
                              f"NDArray magic; the file is corrupt or not MXNet's; {_FIX_FILE}")
        shape = r.unpack(f"<{ndim}I", f"{field} dims")
        none = ndim == 0
    if none:
        raise FmprepError(f"{r.what}: {field} is an uninitialised (shapeless) array; save the "
                          "parameters after they are initialised")
    return _data(r, shape, field)


def read_ndarray_file(data: bytes) -> dict[str, np.ndarray]:
    """Parse an MXNet NDArray file (``mx.nd.save``) without MXNet.

    Parameters
    ----------
    data : bytes
        The whole file.

    Returns
    -------
    dict of str to numpy.ndarray
        Arrays by name, in file order, with the saved dtype and shape (C order, native byte
        order, writable copies). A file saved from a list (no names) is keyed ``"0"``, ``"1"``….

    Raises
    ------
    FmprepError
        If the file is truncated, is not an NDArray list, or holds a sparse, uninitialised or
        otherwise unsupported array.
    """
    r = _Reader(bytes(data), "the MXNet params file")
    head = bytes(r.buf[:8])
    # A short prefix of the magic is a truncated file, not a foreign one: let the reads say so.
    if not head or not _LIST_BYTES.startswith(head):
        head = head.hex()
        raise FmprepError(f"not an MXNet NDArray file (starts with {head or 'nothing'}, expected "
                          f"the list magic 0x112); {_FIX_FILE}")
    r.u64("list magic")
    r.u64("reserved word")
    count = r.u64("array count")
    # Each array takes at least 16 bytes; a larger count is garbage, not a reason to allocate.
    if count > r.remaining() // 16:
        raise FmprepError(f"the MXNet params file claims {count} arrays in {r.remaining()} bytes; "
                          f"it is truncated or corrupt; {_FIX_FILE}")
    arrays = [_ndarray(r, i) for i in range(count)]
    nnames = r.u64("name count")
    if nnames not in (0, count):
        raise FmprepError(f"the MXNet params file has {count} arrays but {nnames} names; it is "
                          f"corrupt; {_FIX_FILE}")
    names = []
    for i in range(nnames):
        size = r.u64(f"name {i} length")
        raw = bytes(r.take(size, f"name {i}"))
        try:
            names.append(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise FmprepError(f"the MXNet params file: name {i} is not UTF-8; it is corrupt; "
                              f"{_FIX_FILE}") from None
    if not names:
        names = [str(i) for i in range(count)]
    if len(set(names)) != len(names):
        raise FmprepError(f"the MXNet params file names an array twice ({names}); it is corrupt; "
                          f"{_FIX_FILE}")
    return dict(zip(names, arrays))


def artifact_predictor_type(symbol_json: str | bytes | None) -> str | None:
    """The predictor type an MXNet ``symbol.json`` shows by its output operator, if any.

    ``LogisticRegressionOutput`` (or a sigmoid) means ``binary_classifier``,
    ``LinearRegressionOutput`` means ``regressor``; a graph with neither, both, or text that
    is not a symbol gives None.
    """
    if not symbol_json:
        return None
    try:
        nodes = [n for n in json.loads(symbol_json).get("nodes", []) if isinstance(n, dict)]
        ops = {str(n.get("op", "")) for n in nodes}
        # MXNet has called a node's attributes "param", "attr" and "attrs" over the years.
        acts = {str((n.get("attrs") or n.get("attr") or n.get("param") or {}).get("act_type"))
                for n in nodes if n.get("op") == "Activation"}
    except (ValueError, AttributeError, TypeError):
        return None
    binary = bool(ops & {"LogisticRegressionOutput", "sigmoid"}) or "sigmoid" in acts
    regress = "LinearRegressionOutput" in ops
    if binary == regress:
        return None
    return "binary_classifier" if binary else "regressor"


def _unwrap(data: bytes) -> tuple[bytes, bytes | None]:
    """(params bytes, symbol.json bytes or None) from a model.tar.gz, model_algo-1 or params."""
    for _ in range(4):  # gzip -> tar -> zip -> params at most; a bound against odd nesting
        if not data:
            raise FmprepError(f"the model artifact is empty; download it again or {_FIX_FILE}")
        if data[:2] == b"\x1f\x8b":
            try:
                data = gzip.decompress(data)
            except (OSError, EOFError, zlib.error) as err:
                raise FmprepError(f"the model artifact is a damaged gzip file ({err}); download "
                                  f"it again or {_FIX_FILE}") from None
        elif data[257:262] == b"ustar":
            data = _tar_member(data)
        elif data[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
            return _zip_members(data)
        elif _LIST_BYTES.startswith(data[:8]):
            # Other SageMaker algorithms (PCA, k-means) store model_algo-1 as bare params.
            return data, None
        else:
            raise FmprepError(f"the model artifact is none of model.tar.gz, a model_algo-1 zip "
                              f"or an MXNet params file (starts with {data[:8].hex()})"
                              f"; {_FIX_FILE}")
    raise FmprepError(f"the model artifact nests archives too deeply; {_FIX_FILE}")


def _tar_member(data: bytes) -> bytes:
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            files = [m for m in tar.getmembers() if m.isfile()]
            chosen = [m for m in files if m.name.rsplit("/", 1)[-1] == "model_algo-1"]
            if not chosen:
                names = ", ".join(m.name for m in files[:10]) or "no files"
                raise FmprepError(f"model.tar.gz holds no model_algo-1 ({names}); {_FIX_FILE}")
            # Reading bytes, never extracting: member names cannot reach the file system.
            return tar.extractfile(chosen[0]).read()
    except (tarfile.TarError, EOFError) as err:
        raise FmprepError(f"model.tar.gz is a damaged tar archive ({err}); download it again or "
                          f"{_FIX_FILE}") from None


def _zip_members(data: bytes) -> tuple[bytes, bytes | None]:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            by_name = {n.rsplit("/", 1)[-1]: n for n in z.namelist() if not n.endswith("/")}
            if "params" not in by_name:
                names = ", ".join(sorted(by_name)[:10]) or "nothing"
                raise FmprepError(f"model_algo-1 holds no params file ({names}); {_FIX_FILE}")
            params = z.read(by_name["params"])
            symbol = z.read(by_name["symbol.json"]) if "symbol.json" in by_name else None
            return params, symbol
    except (zipfile.BadZipFile, zlib.error, EOFError) as err:
        raise FmprepError(f"model_algo-1 is a damaged zip archive ({err}); download the artifact "
                          f"again or {_FIX_FILE}") from None


def _fm_arrays(params: dict[str, np.ndarray]) -> tuple[float, np.ndarray, np.ndarray]:
    found = {}
    for key in _FM_KEYS:
        # Module.save_checkpoint writes "arg:" names; accept bare names as well.
        for name in (f"arg:{key}", key):
            if name in params:
                found[key] = params[name]
                break
    missing = [f"arg:{k}" for k in _FM_KEYS if k not in found]
    if missing:
        held = ", ".join(list(params)[:10]) or "nothing"
        raise FmprepError(f"the artifact's params lack {', '.join(missing)} (it holds {held}); "
                          f"it is not a Factorization Machines model; {_FIX_FILE}")
    w0, w1, v = found["w0_weight"], found["w1_weight"], found["v"]
    if v.ndim != 2 or v.shape[0] < 1 or v.shape[1] < 1:
        raise FmprepError(f"the artifact's arg:v has shape {v.shape}, expected (feature_dim, "
                          f"num_factors); {_FIX_FILE}")
    dim = v.shape[0]
    if w0.size != 1 or w1.shape not in ((dim, 1), (dim,)):
        raise FmprepError(f"the artifact's shapes disagree: arg:w0_weight {w0.shape}, "
                          f"arg:w1_weight {w1.shape}, arg:v {v.shape} (expected (1,), "
                          f"({dim}, 1), ({dim}, k)); {_FIX_FILE}")
    for name, arr in (("arg:w0_weight", w0), ("arg:w1_weight", w1), ("arg:v", v)):
        if arr.dtype.kind != "f":
            raise FmprepError(f"the artifact's {name} is {arr.dtype}, expected floats; "
                              f"{_FIX_FILE}")
        if not np.all(np.isfinite(arr)):
            raise FmprepError(f"the artifact's {name} holds NaN or infinity: the training "
                              "diverged; retrain with smaller learning rates or clip_gradient")
    return float(w0.reshape(-1)[0]), w1.reshape(dim), v


def _read(data: bytes) -> tuple[float, np.ndarray, np.ndarray, bytes | None]:
    params, symbol = _unwrap(bytes(data))
    w0, w, V = _fm_arrays(read_ndarray_file(params))
    return w0, w, V, symbol


def read_fm_artifact(data: bytes) -> tuple[float, np.ndarray, np.ndarray]:
    """The weights of a SageMaker Factorization Machines artifact.

    Parameters
    ----------
    data : bytes
        The bytes of ``model.tar.gz``, of its ``model_algo-1`` zip, or of the bare ``params``
        NDArray file; which one is sniffed from the leading bytes (gzip, tar, zip or 0x112).

    Returns
    -------
    w0 : float
        Global bias (``arg:w0_weight``).
    w : numpy.ndarray, shape (feature_dim,)
        Linear weights (``arg:w1_weight``, flattened), in the saved float dtype.
    V : numpy.ndarray, shape (feature_dim, num_factors)
        Factor vectors (``arg:v``), in the saved float dtype.

    Raises
    ------
    FmprepError
        If the bytes are no such artifact, are truncated or damaged, lack one of the three
        parameters, disagree on shapes or hold non-finite weights.
    """
    w0, w, V, _ = _read(data)
    return w0, w, V


def load_fm_artifact(url: str, storage_options: dict | None = None,
                     predictor_type: str | None = None,
                     expected_feature_dim: int | None = None):
    """Read a SageMaker FM ``model.tar.gz`` (local path or ``s3://``) as an fmprep model.

    Parameters
    ----------
    url : str
        Path or URL of ``model.tar.gz`` (``model_algo-1`` or a bare ``params`` file also do).
    storage_options : dict, optional
        fsspec options for remote URLs.
    predictor_type : {"regressor", "binary_classifier"}, optional
        Used when ``symbol.json`` does not tell (default ``"regressor"``); when it does tell and
        disagrees, that is an error rather than a silent choice.
    expected_feature_dim : int, optional
        The ``feature_dim`` of the data the model will score (OUTPUT's manifest); checked.

    Returns
    -------
    fmprep.model.fm.FMModel
        With float32 weights and empty ``hyperparameters`` (the artifact does not record them).

    Raises
    ------
    FmprepError
        If the file is missing or is not a valid FM artifact, if the predictor types disagree,
        or if ``feature_dim`` differs from ``expected_feature_dim``.
    """
    from .fm import FMModel  # fm imports numba: keep this module light

    if predictor_type is not None and predictor_type not in PREDICTOR_TYPES:
        raise FmprepError(f"predictor_type must be one of {', '.join(PREDICTOR_TYPES)}, got "
                          f"{predictor_type!r}")
    try:
        with storage.open_file(url, "rb", storage_options) as f:
            data = f.read()
    except FileNotFoundError:
        raise FmprepError(f"model artifact not found: {url}; pass the S3ModelArtifacts URL of a "
                          "completed training job (OUTPUT/sagemaker.json model_artifact)") from None
    w0, w, V, symbol = _read(data)
    shown = artifact_predictor_type(symbol)
    if shown is not None and predictor_type is not None and shown != predictor_type:
        raise FmprepError(f"{url} is a {shown} model (its symbol.json), but predictor_type "
                          f"{predictor_type} was asked; drop the setting or pass {shown}")
    if expected_feature_dim is not None and V.shape[0] != int(expected_feature_dim):
        raise FmprepError(f"the artifact has feature_dim {V.shape[0]}, OUTPUT's data has "
                          f"{int(expected_feature_dim)}; import an artifact trained on this data "
                          f"or rerun {command('data')} with the settings the artifact was "
                          "trained on")
    return FMModel(w0=w0, w=w, V=V, predictor_type=shown or predictor_type or "regressor",
                   hyperparameters={})


def import_model(output: str, artifact: str | None = None, model_dir: str | None = None,
                 predictor_type: str | None = None,
                 storage_options: dict | None = None) -> dict:
    """``make import-model``: a SageMaker FM artifact → fmprep's model files in ``model_dir``.

    Parameters
    ----------
    output : str
        OUTPUT of make data; its manifest gives the feature_dim the artifact must have.
    artifact : str, optional
        ``model.tar.gz`` (path or s3:// URL). Default: the artifact of the completed training
        job recorded in ``OUTPUT/sagemaker.json`` (``make train`` on the sagemaker backend),
        which must have been trained on OUTPUT's current data.
    model_dir : str, optional
        Where the model goes (default ``OUTPUT/model``), replacing the model fmprep wrote there.
    predictor_type : str, optional
        When the artifact's ``symbol.json`` does not say.
    storage_options : dict, optional
        fsspec options.

    Returns
    -------
    dict
        ``model_dir``, ``artifact``, ``feature_dim``, ``num_factors``, ``predictor_type`` and,
        for a regressor, ``evaluation`` (:func:`fmprep.model.training.write_evaluation`'s result).

    Raises
    ------
    FmprepError
        Without an artifact to import, for a damaged artifact, or a feature_dim mismatch.
    """
    from .. import config
    from ..freshness import data_stamp, read_manifest, trained_artifact
    from .training import METRICS, read_channel, write_evaluation

    manifest = read_manifest(output, storage_options)
    if artifact is None:
        job, artifact = trained_artifact(
            output, f"pass {setting('artifact')}<model.tar.gz path or s3:// URI> or run "
                    f"{command('train')} {setting('backend')}sagemaker first",
            storage_options, manifest)
        job_name = job.get("name")
    else:
        job_name = None
    model = load_fm_artifact(artifact, storage_options, predictor_type,
                             expected_feature_dim=int(manifest["feature_dim"]))
    model.hyperparameters = {"imported_from": artifact, "training_job": job_name,
                             "feature_dim": model.feature_dim,
                             "num_factors": model.num_factors,
                             "predictor_type": model.predictor_type}
    model_dir = model_dir or storage.join(output, config.LOCAL_MODEL_DIR)
    model.save(model_dir, storage_options, data=data_stamp(manifest))
    result = {"model_dir": model_dir, "artifact": artifact, "feature_dim": model.feature_dim,
              "num_factors": model.num_factors, "predictor_type": model.predictor_type}
    if model.predictor_type == "regressor":
        from .ranking import ranking_model_for

        train = read_channel(output, manifest, "train", storage_options)
        test = read_channel(output, manifest, "test", storage_options)
        recommender = ranking_model_for(output, manifest, model_dir, storage_options, train)
        result["evaluation"] = write_evaluation(model, train, test, manifest, model_dir,
                                                storage_options, recommender)
    # metrics.json of an earlier local model would describe another model: replace it.
    storage.write_json(storage.join(model_dir, METRICS),
                       {"imported_from": artifact, "training_job": job_name,
                        "final": ({"test:rmse": result["evaluation"]["rating"]["model"]["rmse"]}
                                  if "evaluation" in result else {})},
                       storage_options)
    return result
