"""The bookstore gRPC server behind tests/transcode.rs, built on grpcio (PyPI).

    peer.py PROTO_DIR [PORT]  serves wasmgate.bookstore.v1.Bookstore from PROTO_DIR/bookstore.proto
                              on PORT (default: a free one); prints `PORT <n>` once listening

Stubs are generated at start with grpcio-tools' bundled protoc (test side only: the gateway
compiles the same file itself). The server answers from fixed data, echoing what it was sent
where a test needs to see how the request message was built.
"""

import os
import sys
import tempfile
import threading
from concurrent import futures


def load_stubs(proto_dir):
    import grpc_tools
    from grpc_tools import protoc

    well_known = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    out = tempfile.mkdtemp(prefix="wasmgate-bookstore-")
    google_api = os.path.join(out, "google", "api")
    os.makedirs(google_api)
    # grpcio-tools has no google/api protos: the stubs only need the option to exist.
    with open(os.path.join(google_api, "annotations.proto"), "w") as f:
        f.write(
            'syntax = "proto3";\npackage google.api;\n'
            'import "google/protobuf/descriptor.proto";\n'
            "message HttpRule {\n"
            "  string selector = 1;\n"
            "  oneof pattern { string get = 2; string put = 3; string post = 4; string delete = 5; string patch = 6; }\n"
            "  string body = 7;\n"
            "  string response_body = 12;\n"
            "  repeated HttpRule additional_bindings = 11;\n"
            "}\n"
            "extend google.protobuf.MethodOptions { HttpRule http = 72295728; }\n"
        )
    code = protoc.main(
        [
            "protoc",
            f"-I{proto_dir}",
            f"-I{out}",
            f"-I{well_known}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            "bookstore.proto",
        ]
    )
    if code != 0:
        raise SystemExit(f"protoc failed with {code}")
    sys.path.insert(0, out)
    import bookstore_pb2
    import bookstore_pb2_grpc

    return bookstore_pb2, bookstore_pb2_grpc


pb, rpc = load_stubs(sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__)))
released = threading.Event()

SHELVES = {
    1: ("Fiction", 2),
    2: ("History", 0),
    3: ("Fiction", 5),
}


def not_found(context, what, field):
    import grpc
    from google.rpc import code_pb2, error_details_pb2, status_pb2
    from grpc_status import rpc_status

    status = status_pb2.Status(code=code_pb2.NOT_FOUND, message=f"{what} not found")
    info = error_details_pb2.ErrorInfo(reason="SHELF_NOT_FOUND", domain="bookstore.test")
    info.metadata["shelf"] = what
    status.details.add().Pack(info)
    bad = error_details_pb2.BadRequest()
    bad.field_violations.add(field=field, description="no such shelf")
    status.details.add().Pack(bad)
    context.abort_with_status(rpc_status.to_status(status))


def shelf(number):
    theme, count = SHELVES[number]
    return pb.Shelf(id=number, theme=theme, book_count=count)


class Bookstore(rpc.BookstoreServicer):
    def ListShelves(self, request, context):
        found = [
            shelf(n)
            for n in sorted(SHELVES)
            if (not request.ids or n in request.ids)
            and (not request.filter.theme or SHELVES[n][0] == request.filter.theme)
            and SHELVES[n][1] >= request.filter.min_books
        ]
        if request.page_size:
            found = found[: request.page_size]
        return pb.ListShelvesResponse(shelves=found)

    def GetShelf(self, request, context):
        if request.shelf == 8:
            # Headers first, so the status comes in trailers rather than trailers-only.
            context.send_initial_metadata((("x-shelf-source", "none"),))
        if request.shelf not in SHELVES:
            not_found(context, f"shelf {request.shelf}", "shelf")
        context.send_initial_metadata((("x-shelf-source", "memory"),))
        return shelf(request.shelf)

    def CreateShelf(self, request, context):
        return pb.Shelf(id=request.id or 100, theme=request.theme, book_count=request.book_count)

    def CreateBook(self, request, context):
        book = pb.Book()
        book.CopyFrom(request.book)
        book.name = f"shelves/{request.shelf}/books/{request.book.title.lower().replace(' ', '-')}"
        return book

    def GetBook(self, request, context):
        return pb.Book(name=request.name, title=f"Title of {request.name}", author="Anon", pages=42)

    def ClearShelf(self, request, context):
        if request.shelf not in SHELVES:
            not_found(context, f"shelf {request.shelf}", "shelf")
        cleared = shelf(request.shelf)
        cleared.book_count = 0
        return cleared

    def GetShelfTheme(self, request, context):
        if request.shelf not in SHELVES:
            not_found(context, f"shelf {request.shelf}", "shelf")
        return shelf(request.shelf)

    def StreamBooks(self, request, context):
        import grpc

        if request.shelf not in SHELVES:
            not_found(context, f"shelf {request.shelf}", "shelf")
        for i in range(request.count):
            if request.fail_after and i == request.fail_after:
                context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "no more books today")
            yield pb.Book(name=f"shelves/{request.shelf}/books/{i}", title=f"Book {i}", pages=i)
            if request.hold and i == 0:
                released.wait(30)

    def Release(self, request, context):
        from google.protobuf import empty_pb2

        released.set()
        return empty_pb2.Empty()

    def DeleteShelf(self, request, context):
        from google.protobuf import empty_pb2

        return empty_pb2.Empty()


def main():
    import grpc

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    rpc.add_BookstoreServicer_to_server(Bookstore(), server)
    port = server.add_insecure_port(f"127.0.0.1:{sys.argv[2] if len(sys.argv) > 2 else 0}")
    server.start()
    print(f"PORT {port}", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
