"""The local inference server: SageMaker's container contract, over real HTTP on 127.0.0.1."""

from __future__ import annotations

import http.client
import io
import json
import os
import socket
import threading

import numpy as np
import pytest
import scipy.sparse as sp

from fmprep import config, recordio
from fmprep.model.fm import FMModel
from fmprep.serving.serve import make_server, sparse_json_body

os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")
sdk = pytest.importorskip("sagemaker.amazon.common")

F = 12      # feature_dim: 5 users, 6 items, days column
K = 4


def _model(predictor_type="regressor"):
    rng = np.random.default_rng(3)
    return FMModel(w0=3.5, w=rng.normal(0, 0.3, F), V=rng.normal(0, 0.2, (F, K)),
                   predictor_type=predictor_type)


@pytest.fixture(scope="module", params=["regressor", "binary_classifier"])
def server(request):
    """A running server on a free loopback port; yields (model, host, port)."""
    model = _model(request.param)
    srv = make_server(model, "127.0.0.1", 0)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield model, *srv.server_address[:2]
    srv.shutdown()
    srv.drain(10)
    srv.server_close()


def _request(server, method, path, body=b"", headers=None):
    _, host, port = server
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.getheader("Content-Type"), resp.read()
    finally:
        conn.close()


def _post(server, body, content_type="application/json", accept=None):
    headers = {"Content-Type": content_type}
    if accept:
        headers["Accept"] = accept
    return _request(server, "POST", "/invocations", body, headers)


def _rows(n=7, seed=0):
    """CSR rows in fmprep's layout (user, item, days) with F columns."""
    rng = np.random.default_rng(seed)
    user = rng.integers(0, 5, n)
    item = rng.integers(5, 11, n)
    days = rng.uniform(0, 3, n).astype(np.float32)
    indices = np.stack([user, item, np.full(n, F - 1)], axis=1).ravel()
    values = np.stack([np.ones(n, np.float32), np.ones(n, np.float32), days], axis=1).ravel()
    return np.arange(0, 3 * n + 1, 3), indices, values


def _expected(model, indptr, indices, values):
    return model.predict(indptr, indices, values)


def _check_predictions(model, preds, expected):
    assert [p["score"] for p in preds] == pytest.approx(expected.tolist(), rel=1e-6)
    if model.predictor_type == "binary_classifier":
        assert [p["predicted_label"] for p in preds] == [int(s >= 0.5) for s in expected]
    else:
        assert all(set(p) == {"score"} for p in preds)


def test_ping(server):
    assert _request(server, "GET", "/ping")[0] == 200


def test_sparse_json(server):
    model = server[0]
    csr = _rows()
    status, ctype, body = _post(server, sparse_json_body(*csr, F))
    assert status == 200 and ctype == "application/json"
    _check_predictions(model, json.loads(body)["predictions"], _expected(model, *csr))


def test_sparse_json_keys_in_any_order(server):
    model = server[0]
    body = {"instances": [{"data": {"features": {"keys": [F - 1, 7, 2], "shape": [F],
                                                 "values": [0.5, 1, 1]}}}]}
    status, _, out = _post(server, json.dumps(body).encode())
    assert status == 200
    _check_predictions(model, json.loads(out)["predictions"],
                       _expected(model, [0, 3], [2, 7, F - 1], [1, 1, 0.5]))


def test_dense_json_both_forms(server):
    model = server[0]
    indptr, indices, values = _rows(3)
    dense = sp.csr_matrix((values, indices, indptr), shape=(3, F)).toarray()
    instances = [{"features": dense[0].tolist()},
                 {"data": {"features": {"values": dense[1].tolist()}}},
                 {"features": dense[2].tolist()}]
    status, _, out = _post(server, json.dumps({"instances": instances}).encode())
    assert status == 200
    _check_predictions(model, json.loads(out)["predictions"],
                       _expected(model, indptr, indices, values))


def test_jsonlines_in_and_out(server):
    model = server[0]
    indptr, indices, values = _rows(4)
    lines = [json.dumps({"data": {"features": {"keys": indices[a:b].tolist(), "shape": [F],
                                               "values": values[a:b].tolist()}}})
             for a, b in zip(indptr[:-1], indptr[1:])]
    status, ctype, out = _post(server, ("\n".join(lines) + "\n").encode(),
                               "application/jsonlines")
    assert status == 200 and ctype == "application/jsonlines"
    preds = [json.loads(line) for line in out.decode().splitlines()]
    _check_predictions(model, preds, _expected(model, indptr, indices, values))


def test_accept_chooses_the_response_format(server):
    model = server[0]
    csr = _rows(2)
    status, ctype, out = _post(server, sparse_json_body(*csr, F),
                               accept="text/html, application/jsonlines;q=0.9")
    assert status == 200 and ctype == "application/jsonlines"
    _check_predictions(model, [json.loads(x) for x in out.splitlines()], _expected(model, *csr))
    assert _post(server, sparse_json_body(*csr, F), accept="text/csv")[0] == 406


@pytest.mark.parametrize("writer", ["fmprep", "sdk"])
def test_recordio_protobuf_request(server, writer):
    model = server[0]
    indptr, indices, values = _rows(9, seed=4)
    if writer == "fmprep":
        body = recordio.encode_csr(indptr, indices, values, None, F).tobytes()
    else:  # the SageMaker SDK's serializer as an independent oracle of the wire format
        buf = io.BytesIO()
        sdk.write_spmatrix_to_sparse_tensor(
            buf, sp.csr_matrix((values, indices, indptr), shape=(9, F), dtype=np.float32))
        body = buf.getvalue()
    status, _, out = _post(server, body, "application/x-recordio-protobuf")
    assert status == 200
    _check_predictions(model, json.loads(out)["predictions"],
                       _expected(model, indptr, indices, values))


def test_recordio_protobuf_response_reads_with_the_sdk(server):
    model = server[0]
    csr = _rows(5)
    status, ctype, out = _post(server, sparse_json_body(*csr, F),
                               accept="application/x-recordio-protobuf")
    assert status == 200 and ctype == "application/x-recordio-protobuf"
    records = sdk.read_records(io.BytesIO(out))
    expected = _expected(model, *csr)
    assert [r.label["score"].float32_tensor.values[0] for r in records] == \
        pytest.approx(expected.tolist(), rel=1e-6)
    if model.predictor_type == "binary_classifier":
        assert [r.label["predicted_label"].float32_tensor.values[0] for r in records] == \
            [float(s >= 0.5) for s in expected]
    assert all(len(r.features) == 0 for r in records)


def _sparse(keys, values, shape=(F,)):
    return json.dumps({"instances": [{"data": {"features": {
        "keys": keys, "shape": list(shape), "values": values}}}]}).encode()


@pytest.mark.parametrize("body, content_type, fragment", [
    (b'{"instances": [', "application/json", "malformed JSON"),
    (b'{"rows": []}', "application/json", '"instances"'),
    (b'{"instances": []}', "application/json", "no instances"),
    (b'{"instances": [{"x": 1}]}', "application/json", "features"),
    (_sparse([0, F], [1, 1]), "application/json", f"key {F} is outside"),
    (_sparse([-1, 3], [1, 1]), "application/json", "key -1 is outside"),
    (_sparse([0, 3], [1, 1], shape=(F + 1,)), "application/json", "shape"),
    (_sparse([0, 3, 4], [1, 1]), "application/json", "3 keys but 2 values"),
    (_sparse([0, 0.5], [1, 1]), "application/json", "integers"),
    (_sparse([[0], [3]], [1, 1]), "application/json", "integers"),
    (_sparse([0, 3], [[1], [1]]), "application/json", "numbers"),
    (_sparse([0, 3], [1, "a"]), "application/json", "numbers"),
    (_sparse([3, 3], [1, 1]), "application/json", "more than once"),
    (_sparse([3, 4], [1, 1e39]), "application/json", "not a finite float32"),
    (json.dumps({"instances": [{"features": [1.0] * (F - 1)}]}).encode(), "application/json",
     "dense features have"),
    (b'{"features": [1]}\nnot json\n', "application/jsonlines", "line 2"),
    (b"\x0a\x23\xd7\xce\x00\x00", "application/x-recordio-protobuf", "RecordIO"),
])
def test_bad_requests_get_400_with_a_message(server, body, content_type, fragment):
    status, ctype, out = _post(server, body, content_type)
    assert status == 400 and ctype == "application/json"
    assert fragment in json.loads(out)["error"]
    assert _request(server, "GET", "/ping")[0] == 200


def test_recordio_with_another_feature_dim_is_400(server):
    body = recordio.encode_csr([0, 2], [0, F], [1, 1], None, F + 1).tobytes()
    status, _, out = _post(server, body, "application/x-recordio-protobuf")
    assert status == 400 and "feature_dim" in json.loads(out)["error"]


def test_unsupported_content_type_is_415(server):
    status, _, out = _post(server, b"1,2,3", "text/csv")
    assert status == 415 and "application/json" in json.loads(out)["error"]


def test_unknown_path_is_404(server):
    assert _request(server, "GET", "/nope")[0] == 404
    assert _request(server, "POST", "/predict", b"{}", {"Content-Type": "application/json"})[0] \
        == 404


def test_body_over_the_cap_is_413_before_it_is_read(server):
    _, host, port = server
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        # Announce one byte over the cap and send nothing: the server must answer from the
        # header alone, without waiting for (or buffering) the body.
        conn.putrequest("POST", "/invocations")
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(config.INVOKE_MAX_BYTES + 1))
        conn.endheaders()
        resp = conn.getresponse()
        assert resp.status == 413
        assert "6291456" in json.loads(resp.read())["error"]
    finally:
        conn.close()
    assert _request(server, "GET", "/ping")[0] == 200


def test_body_at_the_cap_is_read(server):
    model = server[0]
    csr = _rows(1)
    body = sparse_json_body(*csr, F)
    body += b" " * (config.INVOKE_MAX_BYTES - len(body))  # JSON allows trailing whitespace
    status, _, out = _post(server, body)
    assert status == 200
    _check_predictions(model, json.loads(out)["predictions"], _expected(model, *csr))


def test_truncated_body_is_400(server):
    """A client that stops sending mid-body gets a 400, not a parse of half a request."""
    _, host, port = server
    body = sparse_json_body(*_rows(2), F)
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(f"POST /invocations HTTP/1.1\r\nHost: {host}\r\nContent-Type: "
                     f"application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                     + body[:10])
        sock.shutdown(socket.SHUT_WR)  # end of the request stream: 10 bytes of the body
        resp = http.client.HTTPResponse(sock)
        resp.begin()
        assert resp.status == 400 and resp.getheader("Connection") == "close"
        assert f"ended after 10 of {len(body)} bytes" in json.loads(resp.read())["error"]
    assert _request(server, "GET", "/ping")[0] == 200


def test_keep_alive_survives_errors(server):
    """One connection: a 400, a 404 and a 415 leave it usable for the next request."""
    model = server[0]
    _, host, port = server
    conn = http.client.HTTPConnection(host, port, timeout=10)
    csr = _rows(2)
    try:
        for path, body, ctype, status in [
                ("/invocations", b"{", "application/json", 400),
                ("/elsewhere", b"{}", "application/json", 404),
                ("/invocations", b"x", "text/plain", 415),
                ("/invocations", sparse_json_body(*csr, F), "application/json", 200)]:
            conn.request("POST", path, body=body, headers={"Content-Type": ctype})
            resp = conn.getresponse()
            out = resp.read()
            assert resp.status == status
        _check_predictions(model, json.loads(out)["predictions"], _expected(model, *csr))
    finally:
        conn.close()


def test_many_instances_in_one_request(server):
    model = server[0]
    csr = _rows(1000, seed=9)
    status, _, out = _post(server, sparse_json_body(*csr, F))
    assert status == 200
    _check_predictions(model, json.loads(out)["predictions"], _expected(model, *csr))


def test_serve_command_errors_are_one_line(tmp_path, capsys):
    from fmprep.serving.serve import main

    assert main(["--model-dir", str(tmp_path / "none"), "--port", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fmprep.serving.serve: error:") and "make train" in err
    assert len(err.splitlines()) == 1


def test_port_in_use_is_a_user_error(server):
    from fmprep.errors import FmprepError

    _, host, port = server
    with pytest.raises(FmprepError, match="another port"):
        make_server(_model(), host, port)
