"""gRPC peer for tests/grpc.rs, built on grpcio (PyPI).

    peer.py server [CERT KEY] serves wasmgate.test.Echo (and grpc.health.v1) on a free
                              port, over TLS with CERT and KEY (PEM) when given; prints
                              `PORT <n>` once listening
    peer.py client ADDR CASE  runs one scenario against ADDR and prints its outcome as JSON
    peer.py web URL CASE      the same over gRPC-Web with sonora's client

Stubs are generated from echo.proto at start with grpcio-tools' bundled protoc (test side
only: the gateway needs no protoc).
"""

import json
import os
import sys
import tempfile
import time
from concurrent import futures

HERE = os.path.dirname(os.path.abspath(__file__))


def load_stubs():
    from grpc_tools import protoc

    out = tempfile.mkdtemp(prefix="wasmgate-grpc-")
    code = protoc.main(
        ["protoc", f"-I{HERE}", f"--python_out={out}", f"--grpc_python_out={out}", "echo.proto"]
    )
    if code != 0:
        raise SystemExit(f"protoc failed with {code}")
    sys.path.insert(0, out)
    import echo_pb2
    import echo_pb2_grpc

    return echo_pb2, echo_pb2_grpc


pb, rpc = load_stubs()


def metadata_of(context):
    return [f"{k}={v}" for k, v in context.invocation_metadata() if not k.startswith("grpc-")]


def fail(context, code):
    import grpc
    from google.rpc import code_pb2, error_details_pb2, status_pb2
    from grpc_status import rpc_status

    detail = error_details_pb2.ErrorInfo(reason="TEST_FAILURE", domain="wasmgate.test")
    status = status_pb2.Status(code=code, message=f"failed as asked ({code})")
    status.details.add().Pack(detail)
    context.abort_with_status(rpc_status.to_status(status))


class Echo(rpc.EchoServicer):
    def Unary(self, request, context):
        if request.delay_ms:
            time.sleep(request.delay_ms / 1000)
        if request.fail_code:
            fail(context, request.fail_code)
        text = request.text + ("x" * request.size if request.size else "")
        return pb.EchoReply(text=text, received=len(request.text), metadata=metadata_of(context))

    def ServerStream(self, request, context):
        for index in range(request.count):
            yield pb.EchoReply(text=f"{index}:" + "y" * request.size, received=index)
        if request.fail_code:
            fail(context, request.fail_code)

    def ClientStream(self, request_iterator, context):
        texts, received = [], 0
        for request in request_iterator:
            texts.append(request.text[:16])
            received += len(request.text)
        return pb.EchoReply(text=",".join(texts), received=received)

    def Bidi(self, request_iterator, context):
        for request in request_iterator:
            yield pb.EchoReply(text="echo:" + request.text, received=len(request.text))


def serve(tls):
    import grpc
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=32),
        options=[
            ("grpc.max_receive_message_length", 64 << 20),
            ("grpc.max_send_message_length", 64 << 20),
        ],
    )
    rpc.add_EchoServicer_to_server(Echo(), server)
    health_servicer = health.HealthServicer()
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_servicer.set("wasmgate.test.Echo", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if tls:
        cert, key = (open(path, "rb").read() for path in tls)
        port = server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials([(key, cert)]))
    else:
        port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(f"PORT {port}", flush=True)
    # A line on stdin flips the service to NOT_SERVING (health tests); EOF stops the server.
    for line in sys.stdin:
        state = line.strip()
        value = {
            "serving": health_pb2.HealthCheckResponse.SERVING,
            "not-serving": health_pb2.HealthCheckResponse.NOT_SERVING,
        }[state]
        health_servicer.set("wasmgate.test.Echo", value)
        print(f"HEALTH {state}", flush=True)
    server.stop(0)


def outcome(call):
    """Runs `call`, returning {"ok": result} or {"code": name, "message": ..., "details": [...]}."""
    import grpc
    from grpc_status import rpc_status

    started = time.monotonic()
    try:
        result = call()
        return {"ok": result, "seconds": time.monotonic() - started}
    except grpc.RpcError as error:
        details = []
        status = rpc_status.from_call(error)
        if status is not None:
            details = [d.type_url for d in status.details]
        return {
            "code": error.code().name,
            "message": error.details(),
            "details": details,
            "seconds": time.monotonic() - started,
        }


def client(address, case):
    import grpc

    channel = grpc.insecure_channel(
        address,
        options=[
            ("grpc.max_receive_message_length", 64 << 20),
            ("grpc.max_send_message_length", 64 << 20),
        ],
    )
    stub = rpc.EchoStub(channel)
    # Metadata sent with every call: `GRPC_METADATA="k=v,k2=v2"`.
    md = [tuple(pair.split("=", 1)) for pair in os.environ.get("GRPC_METADATA", "").split(",") if pair]
    md.append(("x-test", "yes"))
    cases = {
        "unary": lambda: outcome(lambda: stub.Unary(pb.EchoRequest(text="hello"), metadata=md).text),
        "unary-metadata": lambda: outcome(
            lambda: list(stub.Unary(pb.EchoRequest(text="m"), metadata=md).metadata)
        ),
        "server-stream": lambda: outcome(
            lambda: [r.text[:8] for r in stub.ServerStream(pb.EchoRequest(count=50, size=100), metadata=md)]
        ),
        "server-stream-fail": lambda: outcome(
            lambda: [r.text[:4] for r in stub.ServerStream(pb.EchoRequest(count=3, fail_code=9), metadata=md)]
        ),
        "client-stream": lambda: outcome(
            lambda: (
                lambda reply: [reply.text, reply.received]
            )(stub.ClientStream(iter(pb.EchoRequest(text=f"part{i}") for i in range(20)), metadata=md))
        ),
        "bidi": lambda: outcome(lambda: bidi(stub, md)),
        "large": lambda: outcome(lambda: large(stub)),
        "details": lambda: outcome(lambda: stub.Unary(pb.EchoRequest(text="x", fail_code=5), metadata=md).text),
        "deadline": lambda: outcome(
            lambda: stub.Unary(pb.EchoRequest(text="slow", delay_ms=3000), timeout=0.3, metadata=md).text
        ),
        "health": lambda: outcome(lambda: health(channel)),
    }
    print(json.dumps(cases[case]()), flush=True)


def bidi(stub, md):
    """Sends one message at a time and waits for its answer before the next: frame by frame."""
    import queue

    requests = queue.Queue()

    def generate():
        while True:
            item = requests.get()
            if item is None:
                return
            yield item

    answers = stub.Bidi(generate(), metadata=md)
    seen = []
    for index in range(10):
        requests.put(pb.EchoRequest(text=f"m{index}"))
        seen.append(next(answers).text)
    requests.put(None)
    return seen


def large(stub):
    """A 16 MiB request in and 16 MiB back, and a stream of 8 x 2 MiB messages."""
    size = 16 << 20
    reply = stub.Unary(pb.EchoRequest(text="L" * size, size=0))
    streamed = sum(len(r.text) for r in stub.ServerStream(pb.EchoRequest(count=8, size=2 << 20)))
    return [len(reply.text), streamed]


def health(channel):
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    stub = health_pb2_grpc.HealthStub(channel)
    reply = stub.Check(health_pb2.HealthCheckRequest(service="wasmgate.test.Echo"))
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def web(url, case):
    import sonora.client

    with sonora.client.insecure_web_channel(url) as channel:
        stub = rpc.EchoStub(WebChannel(channel))
        cases = {
            "unary": lambda: web_outcome(lambda: stub.Unary(pb.EchoRequest(text="web")).text),
            "server-stream": lambda: web_outcome(
                lambda: [r.text[:6] for r in stub.ServerStream(pb.EchoRequest(count=5, size=10))]
            ),
            "details": lambda: web_outcome(
                lambda: stub.Unary(pb.EchoRequest(text="x", fail_code=7)).text
            ),
        }
        print(json.dumps(cases[case]()), flush=True)


class WebChannel:
    """sonora's channel, taking the `_registered_method` argument newer stubs pass."""

    def __init__(self, channel):
        self.channel = channel

    def __getattr__(self, name):
        method = getattr(self.channel, name)

        def call(*args, _registered_method=None, **kwargs):
            return method(*args, **kwargs)

        return call


def web_outcome(call):
    import grpc

    try:
        return {"ok": call()}
    except grpc.RpcError as error:
        return {"code": error.code().name, "message": error.details()}


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "server":
        serve(sys.argv[2:4])
    elif mode == "client":
        client(sys.argv[2], sys.argv[3])
    elif mode == "web":
        web(sys.argv[2], sys.argv[3])
    else:
        raise SystemExit(f"unknown mode {mode}")
