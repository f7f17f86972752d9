"""fmprep.model.artifact against MXNet 1.9.1 itself: SageMaker FM artifacts read without MXNet.

The oracle is real MXNet (``tests/mxnet_oracle.py``) in a virtualenv of its own, built once per
machine under ``$XDG_CACHE_HOME/fmprep-test`` (``~/.cache``; ``FMPREP_MXNET_VENV`` overrides the
path) and reused: MXNet 1.9.1 needs numpy<1.24, which cannot live in the project's venv. If the
venv cannot be built the oracle tests FAIL; ``FMPREP_ALLOW_NO_MXNET=1`` turns that into a skip,
except under CI (``CI=true``), where they always fail. Format-error tests that need no MXNet
build their files with :func:`nd_file`, a minimal writer following MXNet's layout.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from fmprep.model.artifact import (artifact_predictor_type, load_fm_artifact, read_fm_artifact,
                             read_ndarray_file)
from fmprep.errors import FmprepError
from fmprep.model.fm import FMModel

ORACLE_SCRIPT = Path(__file__).with_name("mxnet_oracle.py")
MXNET_REQUIREMENTS = ["mxnet==1.9.1", "numpy<1.24"]
FM_KEYS = ("arg:w0_weight", "arg:w1_weight", "arg:v")

# name, feature_dim, num_factors, dtype, symbol (-> predictor type), saved in np-shape mode (V3)
CASES = [
    ("regressor32", 7, 3, "float32", "regressor", False),
    ("binary32", 6, 4, "float32", "binary_classifier", False),
    ("dim1", 1, 1, "float32", "plain", False),
    ("factors1", 9, 1, "float64", "plain", False),
    ("float64", 5, 8, "float64", "regressor", False),
    ("npshape", 4, 2, "float32", "binary_classifier", True),
    ("wide", 3000, 64, "float32", "regressor", False),
]
CASE_NAMES = [c[0] for c in CASES]


# --- the MXNet oracle virtualenv ------------------------------------------------------------


def _truthy(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


def _oracle_python() -> str | None:
    """An interpreter numpy<1.24 has wheels for (CPython <= 3.11): ours, else one on PATH."""
    if sys.version_info < (3, 12):
        return sys.executable
    for name in ("python3.11", "python3.10", "python3.9", "python3.8"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _venv_dir(python: str) -> Path:
    override = os.environ.get("FMPREP_MXNET_VENV")
    if override:
        return Path(override)
    version = subprocess.run([python, "-c", "import sys; print('%d%d' % sys.version_info[:2])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "fmprep-test" / f"mxnet-1.9.1-py{version}"


def _child_env() -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "__PYVENV_LAUNCHER__")}
    env["PYTHONNOUSERSITE"] = "1"  # only the oracle venv's packages
    return env


def _unavailable(reason: str):
    """Fail (the default, and always under CI) or, with FMPREP_ALLOW_NO_MXNET=1, skip."""
    if _truthy("FMPREP_ALLOW_NO_MXNET") and not _truthy("CI"):
        pytest.skip(f"MXNet oracle unavailable ({reason}); FMPREP_ALLOW_NO_MXNET is set")
    pytest.fail(f"MXNet oracle unavailable: {reason}. Needs PyPI access for "
                f"{' '.join(MXNET_REQUIREMENTS)} on CPython <= 3.11 x86_64; set "
                "FMPREP_ALLOW_NO_MXNET=1 to skip these tests outside CI", pytrace=False)


@contextlib.contextmanager
def _locked(path: Path):
    """An exclusive lock: two pytest runs on one machine must not build the venv at once."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _report(request, text: str):
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        print(f"\n[test_artifact] {text}", file=sys.stderr)


@pytest.fixture(scope="session")
def mxnet_python(request) -> str:
    """The python of a virtualenv with MXNet 1.9.1, built on first use and then reused."""
    python = _oracle_python()
    if python is None:
        _unavailable("no CPython <= 3.11 found (numpy<1.24 has no wheels for newer ones)")
    venv = _venv_dir(python)
    bin_python = venv / "bin" / "python"
    marker = venv / "fmprep-oracle.json"  # written last: its presence means a complete venv
    with _locked(venv.parent / f".{venv.name}.lock"):
        if marker.exists() and bin_python.exists():
            return str(bin_python)
        shutil.rmtree(venv, ignore_errors=True)
        started = time.monotonic()
        steps = [[python, "-m", "venv", str(venv)],
                 [str(bin_python), "-m", "pip", "install", "--quiet", *MXNET_REQUIREMENTS],
                 [str(bin_python), "-c", "import mxnet; print(mxnet.__version__)"]]
        for step in steps:
            try:
                done = subprocess.run(step, capture_output=True, text=True, timeout=1200,
                                      env=_child_env())
            except (OSError, subprocess.TimeoutExpired) as err:
                _unavailable(f"{' '.join(step[:4])} failed: {err}")
            if done.returncode != 0:
                tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
                _unavailable(f"{' '.join(step[:4])} exited {done.returncode}: {tail[-600:]}")
        seconds = time.monotonic() - started
        marker.write_text(json.dumps({"requirements": MXNET_REQUIREMENTS, "seconds": seconds,
                                      "python": python, "created": time.time()}))
    _report(request, f"built the MXNet oracle venv {venv} in {seconds:.1f} s")
    return str(bin_python)


def _rows(rng, feature_dim: int, n: int) -> list[list[list[float]]]:
    """Sparse rows like fmprep's: a user and an item one-hot, sometimes a numeric feature."""
    rows = []
    for r in range(n):
        chosen = rng.choice(feature_dim, size=min(feature_dim, 2 + r % 2), replace=False)
        values = [1.0, 1.0, float(rng.uniform(0.1, 3.0))]
        rows.append([[int(c), v] for c, v in zip(chosen, values)])
    return rows


@pytest.fixture(scope="session")
def oracle(mxnet_python, tmp_path_factory) -> Path:
    """Run the oracle once: a folder per case (see tests/mxnet_oracle.py) and extra/."""
    out = tmp_path_factory.mktemp("mxnet-oracle")
    rng = np.random.default_rng(5)
    cases = [{"name": name, "feature_dim": d, "num_factors": k, "dtype": dtype, "seed": i,
              "symbol": symbol, "np_shape": np_shape, "rows": _rows(rng, d, 6)}
             for i, (name, d, k, dtype, symbol, np_shape) in enumerate(CASES)]
    spec = out / "spec.json"
    spec.write_text(json.dumps({"cases": cases}))
    done = subprocess.run([mxnet_python, str(ORACLE_SCRIPT), str(spec), str(out)],
                          capture_output=True, text=True, timeout=600, env=_child_env())
    assert done.returncode == 0, done.stderr[-2000:]
    versions = json.loads(done.stdout.strip().splitlines()[-1])
    assert versions["mxnet"] == "1.9.1"
    return out


def _expected(oracle: Path, name: str) -> dict[str, np.ndarray]:
    with np.load(oracle / name / "expected.npz") as z:
        return {k: z[k] for k in z.files}


def _case(name: str):
    return next(c for c in CASES if c[0] == name)


# --- (1) arrays read back exactly -----------------------------------------------------------


@pytest.mark.parametrize("name", CASE_NAMES)
def test_params_match_mxnet_exactly(oracle, name):
    _, dim, k, dtype, _, _ = _case(name)
    got = read_ndarray_file((oracle / name / "params").read_bytes())
    exp = _expected(oracle, name)
    assert list(got) == list(FM_KEYS)  # mx.nd.save keeps the dict's order
    for key, ref, shape in (("arg:w0_weight", exp["w0"], (1,)),
                            ("arg:w1_weight", exp["w1"], (dim, 1)),
                            ("arg:v", exp["v"], (dim, k))):
        assert got[key].dtype == np.dtype(dtype) == ref.dtype
        assert got[key].shape == shape == ref.shape
        assert np.array_equal(got[key], ref)
        assert got[key].flags.writeable and got[key].flags.c_contiguous


@pytest.mark.parametrize("name", CASE_NAMES)
@pytest.mark.parametrize("member", ["model.tar.gz", "model_algo-1", "params"])
def test_fm_artifact_in_every_wrapping(oracle, name, member):
    _, dim, k, dtype, _, _ = _case(name)
    w0, w, V = read_fm_artifact((oracle / name / member).read_bytes())
    exp = _expected(oracle, name)
    assert isinstance(w0, float) and w0 == exp["w0"][0]
    assert w.shape == (dim,) and w.dtype == np.dtype(dtype)
    assert np.array_equal(w, exp["w1"][:, 0])
    assert V.shape == (dim, k) and np.array_equal(V, exp["v"])


def test_other_dtypes_lists_and_numpy_shapes(oracle):
    for name in ("dtypes", "list", "v3"):
        got = read_ndarray_file((oracle / "extra" / name).read_bytes())
        with np.load(oracle / "extra" / f"{name}.npz") as z:
            exp = {k.replace("__", ":"): z[k] for k in z.files}
        assert list(got) == list(exp), name
        for key, ref in exp.items():
            assert got[key].dtype == ref.dtype and got[key].shape == ref.shape, (name, key)
            assert np.array_equal(got[key], ref), (name, key)
    assert {str(a.dtype) for a in read_ndarray_file(
        (oracle / "extra" / "dtypes").read_bytes()).values()} == {
        "float16", "float32", "float64", "uint8", "int8", "int32", "int64", "bool"}


def test_sparse_array_is_refused(oracle):
    with pytest.raises(FmprepError, match=r"row_sparse array.*tostype\('default'\)"):
        read_ndarray_file((oracle / "extra" / "row_sparse").read_bytes())


# --- (2) scores ------------------------------------------------------------------------------


def _csr(rows):
    indptr = np.cumsum([0] + [len(r) for r in rows])
    indices = np.array([c for r in rows for c, _ in r], dtype=np.int64)
    values = np.array([v for r in rows for _, v in r], dtype=np.float32)
    return indptr, indices, values


@pytest.mark.parametrize("name", CASE_NAMES)
def test_predict_matches_numpy_and_mxnet(oracle, name):
    _, dim, _, _, symbol, _ = _case(name)
    model = load_fm_artifact(str(oracle / name / "model.tar.gz"))
    assert isinstance(model, FMModel) and model.hyperparameters == {}
    binary = symbol == "binary_classifier"
    assert model.predictor_type == ("binary_classifier" if binary else "regressor")
    exp = _expected(oracle, name)
    w0 = float(exp["w0"][0])
    w = exp["w1"][:, 0].astype(np.float32).astype(np.float64)
    V = exp["v"].astype(np.float32).astype(np.float64)

    def link(y):
        return 1 / (1 + np.exp(-y)) if binary else y

    # A user u and an item i, one-hot: w0 + w_u + w_i + <v_u, v_i>, computed independently.
    pairs = [(u, i) for u in range(min(dim, 4)) for i in range(dim - 1, max(dim - 4, 0) - 1, -1)
             if u != i] or [(0, None)]
    rows = [[[u, 1.0]] + ([[i, 1.0]] if i is not None else []) for u, i in pairs]
    want = np.array([link(w0 + w[u] + (w[i] + V[u] @ V[i] if i is not None else 0.0))
                     for u, i in pairs])
    got = model.predict(*_csr(rows))
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=2e-6)

    # General rows (values != 1, 2-3 features) against MXNet's own dense computation.
    spec = json.loads((oracle / "spec.json").read_text())
    case_rows = next(c["rows"] for c in spec["cases"] if c["name"] == name)
    np.testing.assert_allclose(model.predict(*_csr(case_rows)), exp["scores"], rtol=1e-5,
                               atol=1e-5)


def test_predictor_type_from_symbol_and_parameter(oracle):
    assert load_fm_artifact(str(oracle / "dim1" / "model.tar.gz"),
                            predictor_type="binary_classifier").predictor_type == \
        "binary_classifier"  # a plain symbol tells nothing: the parameter decides
    assert load_fm_artifact(str(oracle / "binary32" / "params")).predictor_type == \
        "regressor"  # bare params carry no symbol: the default
    with pytest.raises(FmprepError, match="is a binary_classifier model .*pass binary_classifier"):
        load_fm_artifact(str(oracle / "binary32" / "model.tar.gz"), predictor_type="regressor")
    with pytest.raises(FmprepError, match="predictor_type must be one of"):
        load_fm_artifact(str(oracle / "dim1" / "model.tar.gz"), predictor_type="ranker")
    assert artifact_predictor_type((oracle / "regressor32" / "symbol.json").read_bytes()) == \
        "regressor"
    assert artifact_predictor_type('{"nodes": [{"op": "Activation", '
                                   '"attrs": {"act_type": "sigmoid"}}]}') == "binary_classifier"
    for text in (None, "", "not json", "[]", '{"nodes": 3}',
                 (oracle / "dim1" / "symbol.json").read_text()):
        assert artifact_predictor_type(text) is None


def test_expected_feature_dim(oracle):
    url = str(oracle / "regressor32" / "model.tar.gz")
    assert load_fm_artifact(url, expected_feature_dim=7).feature_dim == 7
    with pytest.raises(FmprepError) as err:
        load_fm_artifact(url, expected_feature_dim=8)
    assert str(err.value).startswith("the artifact has feature_dim 7, OUTPUT's data has 8; "
                                     "import an artifact trained on this data or rerun make data")


# --- (3) damaged and foreign files -------------------------------------------------------------

V2 = 0xF993FAC9


def nd_file(arrays, names=None, magic=V2, stype=0, flag=None, list_magic=0x112):
    """A minimal MXNet NDArray file writer (dense arrays, legacy V2 layout) for error tests."""
    out = [struct.pack("<QQQ", list_magic, 0, len(arrays))]
    flags = {np.dtype("float32"): 0, np.dtype("float64"): 1, np.dtype("int32"): 4}
    for a in arrays:
        a = np.ascontiguousarray(a)
        out.append(struct.pack("<Iii", magic, stype, a.ndim))
        out.append(struct.pack(f"<{a.ndim}q", *a.shape))
        out.append(struct.pack("<iii", 1, 0, flags[a.dtype] if flag is None else flag))
        out.append(a.astype(a.dtype.newbyteorder("<")).tobytes())
    names = list(names) if names is not None else []
    out.append(struct.pack("<Q", len(names)))
    for n in names:
        raw = n.encode()
        out.append(struct.pack("<Q", len(raw)) + raw)
    return b"".join(out)


def fm_params(dim=3, k=2, drop=(), **overrides):
    arrays = {"arg:w0_weight": np.array([0.5], np.float32),
              "arg:w1_weight": np.arange(dim, dtype=np.float32).reshape(dim, 1),
              "arg:v": np.ones((dim, k), np.float32)}
    arrays.update(overrides)
    kept = {n: a for n, a in arrays.items() if n not in drop}
    return nd_file(list(kept.values()), list(kept))


def zip_of(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    return buf.getvalue()


def tar_gz_of(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def one_line_error(data: bytes) -> str:
    with pytest.raises(FmprepError) as err:
        read_fm_artifact(data)
    text = str(err.value)
    assert "\n" not in text and len(text) < 400
    return text


def test_writer_in_these_tests_is_readable():
    w0, w, V = read_fm_artifact(tar_gz_of({"model_algo-1": zip_of({"params": fm_params()})}))
    assert w0 == 0.5 and w.tolist() == [0, 1, 2] and V.shape == (3, 2)


def test_every_truncation_is_a_one_line_error(oracle):
    params = (oracle / "dim1" / "params").read_bytes()
    for n in range(len(params)):
        text = one_line_error(params[:n])
        assert ("truncated" in text if n else "is empty" in text), (n, text)
    for member in ("model.tar.gz", "model_algo-1"):
        data = (oracle / "wide" / member).read_bytes()
        for n in sorted({0, 1, 2, 10, 100, 600, len(data) // 3, len(data) // 2, len(data) - 30,
                         len(data) - 1}):
            one_line_error(data[:n])


def test_corrupt_bytes_never_escape_as_other_errors(oracle):
    # Flipped bytes either still parse or give FmprepError: never struct.error, MemoryError...
    params = (oracle / "regressor32" / "params").read_bytes()
    rng = np.random.default_rng(0)
    for _ in range(400):
        data = bytearray(params)
        for pos in rng.integers(0, len(data), size=rng.integers(1, 4)):
            data[pos] = int(rng.integers(0, 256))
        try:
            read_fm_artifact(bytes(data))
        except FmprepError:
            pass


def test_wrong_magic_and_foreign_files():
    assert "none of model.tar.gz" in one_line_error(b"\x89PNG\r\n\x1a\n" + bytes(100))
    assert "is empty" in one_line_error(b"")
    assert "not an MXNet NDArray file" in one_line_error(
        zip_of({"params": nd_file([np.ones(2, np.float32)], ["a"], list_magic=0x113)}))
    text = one_line_error(nd_file([np.ones(2, np.float32)], ["a"], magic=0xDEADBEEF))
    assert "no known MXNet NDArray magic" in text
    assert "damaged gzip" in one_line_error(b"\x1f\x8b" + bytes(40))
    assert "model_algo-1 holds no params file (symbol.json)" in one_line_error(
        tar_gz_of({"model_algo-1": zip_of({"symbol.json": b"{}"})}))
    assert "holds no model_algo-1 (model_algo-2, notes.txt)" in one_line_error(
        tar_gz_of({"model_algo-2": b"x", "notes.txt": b"y"}))
    assert "damaged zip" in one_line_error(b"PK\x03\x04" + bytes(60))


def test_bare_model_algo_params_and_plain_tar():
    # PCA/k-means style model_algo-1 (bare params), and an uncompressed tar, are sniffed too.
    w0, _, _ = read_fm_artifact(tar_gz_of({"model_algo-1": fm_params()}))
    assert w0 == 0.5
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("./model_algo-1")
        data = zip_of({"params": fm_params(), "symbol.json": b"{}"})
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    assert read_fm_artifact(buf.getvalue())[0] == 0.5
    assert read_fm_artifact(gzip.compress(fm_params()))[0] == 0.5


def test_missing_keys_and_bad_shapes():
    text = one_line_error(fm_params(drop=("arg:v",)))
    assert text.startswith("the artifact's params lack arg:v (it holds arg:w0_weight, "
                           "arg:w1_weight); it is not a Factorization Machines model")
    pca = nd_file([np.ones((3, 2), np.float32), np.ones(2, np.float32)], ["v", "s"])
    assert "lack arg:w0_weight, arg:w1_weight" in one_line_error(pca)
    # Bare (unprefixed) names, as mx.nd.save of Module.get_params() gives, are accepted.
    bare = nd_file([np.array([1.0], np.float32), np.ones((2, 1), np.float32),
                    np.ones((2, 2), np.float32)], ["w0_weight", "w1_weight", "v"])
    assert read_fm_artifact(bare)[0] == 1.0
    assert "shapes disagree" in one_line_error(
        fm_params(**{"arg:w1_weight": np.ones((4, 1), np.float32)}))
    assert "expected (feature_dim, num_factors)" in one_line_error(
        fm_params(**{"arg:v": np.ones(3, np.float32)}))
    assert "expected floats" in one_line_error(
        fm_params(**{"arg:v": np.ones((3, 2), np.int32)}))
    nan_v = np.ones((3, 2), np.float32)
    nan_v[1, 1] = np.nan
    assert "training diverged" in one_line_error(fm_params(**{"arg:v": nan_v}))


def test_ndarray_file_structure_errors():
    a = [np.ones(2, np.float32)]
    with pytest.raises(FmprepError, match="csr array.*dense arrays only"):
        read_ndarray_file(nd_file(a, ["a"], stype=2))
    with pytest.raises(FmprepError, match="type flag 12"):
        read_ndarray_file(nd_file(a, ["a"], flag=12))
    with pytest.raises(FmprepError, match="1 arrays but 2 names"):
        read_ndarray_file(nd_file(a, ["a", "b"]))
    with pytest.raises(FmprepError, match="names an array twice"):
        read_ndarray_file(nd_file(a * 2, ["a", "a"]))
    with pytest.raises(FmprepError, match="claims 1000000 arrays"):
        read_ndarray_file(struct.pack("<QQQ", 0x112, 0, 10**6) + bytes(64))
    # An uninitialised array in the legacy layout: ndim 0 and nothing after it.
    none = struct.pack("<QQQ", 0x112, 0, 1) + struct.pack("<Iii", V2, 0, 0) + struct.pack("<Q", 0)
    with pytest.raises(FmprepError, match="uninitialised"):
        read_ndarray_file(none)
    # The pre-V1 layout: ndim first, uint32 dims, then context, flag, data.
    old = (struct.pack("<QQQ", 0x112, 0, 1) + struct.pack("<III", 2, 2, 1)
           + struct.pack("<iii", 1, 0, 0) + np.array([1.5, 2.5], "<f4").tobytes()
           + struct.pack("<QQ", 1, 1) + b"x")
    got = read_ndarray_file(old)
    assert got["x"].shape == (2, 1) and got["x"].ravel().tolist() == [1.5, 2.5]
    # V1: magic, then an int64 shape, no storage type.
    v1 = (struct.pack("<QQQ", 0x112, 0, 1) + struct.pack("<Iiq", 0xF993FAC8, 1, 2)
          + struct.pack("<iii", 1, 0, 1) + np.array([3.0, 4.0], "<f8").tobytes()
          + struct.pack("<Q", 0))
    assert read_ndarray_file(v1)["0"].tolist() == [3.0, 4.0]


def test_missing_file(tmp_path):
    with pytest.raises(FmprepError, match="model artifact not found: .*S3ModelArtifacts"):
        load_fm_artifact(str(tmp_path / "nope" / "model.tar.gz"))


# --- (4) from S3 --------------------------------------------------------------------------------


def test_load_from_s3(s3, oracle):
    url = "s3://fmprep-test/out/model/job-1/output/model.tar.gz"
    s3.pipe(url, (oracle / "binary32" / "model.tar.gz").read_bytes())
    model = load_fm_artifact(url, expected_feature_dim=6)
    exp = _expected(oracle, "binary32")
    assert model.predictor_type == "binary_classifier"
    assert np.array_equal(model.V, exp["v"]) and np.array_equal(model.w, exp["w1"][:, 0])
    with pytest.raises(FmprepError, match="model artifact not found: s3://fmprep-test/none"):
        load_fm_artifact("s3://fmprep-test/none/model.tar.gz")


# --- make import-model: an MXNet-written artifact for OUTPUT's data ---------------------------


@pytest.fixture(scope="module")
def imported(mxnet_python, sample_file, tmp_path_factory):
    """make data's OUTPUT on the sample, and an MXNet artifact with its feature_dim."""
    from fmprep.config import PrepSettings
    from fmprep.pipeline import run_data

    root = tmp_path_factory.mktemp("import")
    work, output = str(root / "work"), str(root / "output")
    manifest = run_data(sample_file[0], work, output, PrepSettings(train_shards=2,
                                                                   days_scale="years"))
    spec = root / "spec.json"
    spec.write_text(json.dumps({"cases": [{"name": "job", "feature_dim": manifest["feature_dim"],
                                           "num_factors": 4, "dtype": "float32", "seed": 9,
                                           "symbol": "regressor", "rows": [[[0, 1.0]]]}]}))
    done = subprocess.run([mxnet_python, str(ORACLE_SCRIPT), str(spec), str(root / "art")],
                          capture_output=True, text=True, timeout=600, env=_child_env())
    assert done.returncode == 0, done.stderr[-2000:]
    return output, work, manifest, root / "art" / "job"


def test_import_model_predicts_the_artifacts_fm(imported, capsys):
    from fmprep import config
    from fmprep.model.evaluate import fm_columns
    from fmprep.model.training import read_channel

    output, _, manifest, art = imported
    td = _train_deploy()
    assert td.main(["import-model", "--output", output,
                    "--artifact", str(art / "model.tar.gz")]) == 0
    assert "imported" in capsys.readouterr().out
    model_dir = os.path.join(output, config.LOCAL_MODEL_DIR)
    model = FMModel.load(model_dir)
    expected = np.load(art / "expected.npz")
    w0, w, V = float(expected["w0"][0]), expected["w1"].ravel(), expected["v"]
    test = read_channel(output, manifest, "test")
    u, i, d = fm_columns(test, manifest["num_users"], manifest["feature_dim"])
    # Without days: exactly w0 + w_u + w_i + <v_u, v_i>.
    rows = np.ravel(np.column_stack([u, i]))
    got = model.predict(np.arange(0, rows.size + 1, 2), rows, np.ones(rows.size))
    want = w0 + w[u] + w[i] + np.einsum("nf,nf->n", V[u], V[i])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # With days (the rows make data wrote): the full FM, pair by pair.
    dcol = manifest["feature_dim"] - 1
    got = model.predict(test.indptr, test.indices, test.values)
    want = (w0 + w[u] + w[i] + d * w[dcol] + np.einsum("nf,nf->n", V[u], V[i])
            + d * (V[u] @ V[dcol]) + d * (V[i] @ V[dcol]))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    # Evaluated like a local model; metrics.json keeps final test:rmse.
    evaluation = json.loads(open(os.path.join(model_dir, "evaluation.json")).read())
    metrics = json.loads(open(os.path.join(model_dir, "metrics.json")).read())
    assert metrics["final"]["test:rmse"] == pytest.approx(evaluation["rating"]["model"]["rmse"])
    assert "recommender" in evaluation["ranking"]


def test_import_model_default_is_the_recorded_job(imported, tmp_path, capsys):
    from fmprep import config
    from fmprep.freshness import data_stamp

    output, _, manifest, art = imported
    td = _train_deploy()
    record = os.path.join(output, config.SAGEMAKER_RECORD)
    assert td.main(["import-model", "--output", output]) == 2
    assert "no completed SageMaker training job" in capsys.readouterr().err
    with open(record, "w") as f:  # what make train BACKEND=sagemaker records
        json.dump({"region": "us-east-1", "training_job": {
            "name": "job-1", "status": "Completed", "data": data_stamp(manifest),
            "model_artifact": str(art / "model.tar.gz")}}, f)
    try:
        assert td.main(["import-model", "--output", output]) == 0
        assert "job/model.tar.gz" in capsys.readouterr().out
        meta = json.loads(open(os.path.join(output, config.LOCAL_MODEL_DIR,
                                            "model.json")).read())
        assert meta["hyperparameters"]["training_job"] == "job-1"
    finally:
        os.remove(record)
    # A missing artifact: one line, the model left as it was.
    before = open(os.path.join(output, config.LOCAL_MODEL_DIR, "model.npz"), "rb").read()
    assert td.main(["import-model", "--output", output, "--artifact",
                    str(tmp_path / "missing.tar.gz")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not found" in err
    assert before == open(os.path.join(output, config.LOCAL_MODEL_DIR, "model.npz"),
                          "rb").read()


def test_import_model_refuses_another_feature_dim(imported, oracle, capsys):
    output, *_ = imported
    td = _train_deploy()
    assert td.main(["import-model", "--output", output, "--artifact",
                    str(oracle / "wide" / "model.tar.gz")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "feature_dim 3000" in err


def _train_deploy():
    import importlib.util

    script = Path(__file__).resolve().parents[1] / "scripts" / "train_deploy.py"
    spec = importlib.util.spec_from_file_location("train_deploy_import", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
