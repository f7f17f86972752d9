"""Test oracle for fmprep.model.artifact: writes real MXNet files. Runs INSIDE the MXNet 1.9.1 venv.

Not a test module (pytest collects ``test_*.py`` only) and never imported by fmprep: it runs as
``<mxnet-venv>/bin/python tests/mxnet_oracle.py SPEC.json OUT_DIR``, with the MXNet and
numpy<1.24 of that venv, so the bytes fmprep parses come from MXNet's own ``mx.nd.save``.

SPEC.json::

    {"cases": [{"name": "...", "feature_dim": 5, "num_factors": 2, "dtype": "float32",
                "seed": 0, "symbol": "regressor" | "binary_classifier" | "plain",
                "np_shape": false, "rows": [[[index, value], ...], ...]}, ...]}

For each case, OUT_DIR/<name>/ gets what a SageMaker FM job would leave: ``params`` (keys
``arg:w0_weight`` (1,), ``arg:w1_weight`` (feature_dim, 1), ``arg:v`` (feature_dim,
num_factors)), ``symbol.json``, ``model_algo-1`` (a zip of the two) and ``model.tar.gz``
(holding model_algo-1); plus ``expected.npz`` with the same arrays and ``scores``: the FM
output of ``rows`` computed by MXNet on dense inputs (sigmoid for binary_classifier).

OUT_DIR/extra/ gets NDArray files for the reader's edge cases: ``dtypes`` (one array per
supported type flag), ``list`` (saved from a list: no names), ``v3`` (numpy shape semantics,
with a 0-d scalar and a zero-size array), ``row_sparse`` (a sparse array), each with an
``<name>.npz`` of the expected arrays (keys escaped: ``:`` -> ``__``).

Prints one JSON line: {"mxnet": version, "numpy": version}.
"""

import json
import os
import sys
import tarfile
import zipfile

import mxnet as mx
import numpy as np


def symbol_json(kind):
    """A small symbol whose output operator tells the predictor type (or does not)."""
    data = mx.sym.Variable("data")
    if kind == "plain":
        return data.tojson()
    w0 = mx.sym.Variable("w0_weight")
    w1 = mx.sym.Variable("w1_weight")
    lin = mx.sym.broadcast_add(mx.sym.dot(data, w1), w0)
    label = mx.sym.Variable("out_label")
    if kind == "binary_classifier":
        out = mx.sym.LogisticRegressionOutput(lin, label=label, name="out")
    elif kind == "regressor":
        out = mx.sym.LinearRegressionOutput(lin, label=label, name="out")
    else:
        raise ValueError(kind)
    return out.tojson()


def fm_scores(w0, w1, v, rows, feature_dim, binary):
    """FM output with MXNet's own ops on dense x: w0 + x w + 1/2 sum((xV)^2 - x^2 V^2)."""
    x = np.zeros((len(rows), feature_dim), dtype=w1.dtype)
    for r, row in enumerate(rows):
        for index, value in row:
            x[r, int(index)] += value
    xs = mx.nd.array(x, dtype=w1.dtype)
    mw0, mw1, mv = (mx.nd.array(a, dtype=a.dtype) for a in (w0, w1, v))
    linear = mx.nd.dot(xs, mw1).reshape((-1,)) + mw0
    xv = mx.nd.dot(xs, mv)
    pair = 0.5 * mx.nd.sum(xv * xv - mx.nd.dot(xs * xs, mv * mv), axis=1)
    y = linear + pair
    if binary:
        y = mx.nd.sigmoid(y)
    return y.asnumpy()


def write_case(case, out):
    d, k, dtype = case["feature_dim"], case["num_factors"], case["dtype"]
    rng = np.random.RandomState(case["seed"])
    w0 = mx.nd.array(rng.normal(size=(1,)), dtype=dtype)
    w1 = mx.nd.array(rng.normal(scale=0.5, size=(d, 1)), dtype=dtype)
    v = mx.nd.array(rng.normal(scale=0.3, size=(d, k)), dtype=dtype)
    folder = os.path.join(out, case["name"])
    os.makedirs(folder, exist_ok=True)
    params_path = os.path.join(folder, "params")
    params = {"arg:w0_weight": w0, "arg:w1_weight": w1, "arg:v": v}
    if case.get("np_shape"):
        with mx.util.np_shape(True):
            mx.nd.save(params_path, params)
    else:
        mx.nd.save(params_path, params)
    symbol = symbol_json(case.get("symbol", "plain"))
    with open(os.path.join(folder, "symbol.json"), "w") as f:
        f.write(symbol)
    algo = os.path.join(folder, "model_algo-1")
    with zipfile.ZipFile(algo, "w", zipfile.ZIP_DEFLATED) as z:
        z.write(os.path.join(folder, "symbol.json"), "symbol.json")
        z.write(params_path, "params")
    with tarfile.open(os.path.join(folder, "model.tar.gz"), "w:gz") as tar:
        tar.add(algo, arcname="model_algo-1")
    a0, a1, av = w0.asnumpy(), w1.asnumpy(), v.asnumpy()
    scores = fm_scores(a0, a1, av, case.get("rows", []), d,
                       case.get("symbol") == "binary_classifier")
    np.savez(os.path.join(folder, "expected.npz"), w0=a0, w1=a1, v=av, scores=scores)


def write_extra(out):
    folder = os.path.join(out, "extra")
    os.makedirs(folder, exist_ok=True)
    rng = np.random.RandomState(1)

    def save(name, arrays, expected, np_shape=False):
        path = os.path.join(folder, name)
        if np_shape:
            with mx.util.np_shape(True):
                mx.nd.save(path, arrays)
        else:
            mx.nd.save(path, arrays)
        np.savez(path + ".npz", **{key.replace(":", "__"): val for key, val in expected.items()})

    typed = {
        "f16": rng.normal(size=(3, 4)).astype("float16"),
        "u8": rng.randint(0, 255, size=(7,)).astype("uint8"),
        "i32": rng.randint(-2**31, 2**31 - 1, size=(2, 3, 2)).astype("int32"),
        "i8": rng.randint(-128, 127, size=(5,)).astype("int8"),
        "i64": rng.randint(-2**62, 2**62, size=(4,), dtype=np.int64),
        "bool": rng.randint(0, 2, size=(6,)).astype(bool),
        "f64": rng.normal(size=(1, 1)),
        "f32:5d": rng.normal(size=(2, 1, 3, 1, 2)).astype("float32"),
    }
    save("dtypes", {key: mx.nd.array(val, dtype=val.dtype) for key, val in typed.items()}, typed)

    listed = [rng.normal(size=(3,)).astype("float32"), rng.normal(size=(2, 2))]
    save("list", [mx.nd.array(a, dtype=a.dtype) for a in listed],
         {str(i): a for i, a in enumerate(listed)})

    with mx.util.np_shape(True):
        v3 = {"scalar": mx.nd.array(np.float32(3.5)), "empty": mx.nd.zeros((0, 3)),
              "m": mx.nd.array(rng.normal(size=(2, 3)), dtype="float64")}
        v3_np = {key: val.asnumpy() for key, val in v3.items()}
    save("v3", v3, v3_np, np_shape=True)

    dense = np.zeros((4, 2), dtype="float32")
    dense[1] = [1.0, 2.0]
    save("row_sparse", {"arg:w1_weight": mx.nd.array(dense).tostype("row_sparse")},
         {"arg:w1_weight": dense})


def main():
    spec_path, out = sys.argv[1], sys.argv[2]
    with open(spec_path) as f:
        spec = json.load(f)
    for case in spec["cases"]:
        write_case(case, out)
    write_extra(out)
    print(json.dumps({"mxnet": mx.__version__, "numpy": np.__version__}))


if __name__ == "__main__":
    main()
