"""A tiny stand-in for the tunehouse HTTP API: canned OpenAI-shaped responses, every request recorded.

Only the HTTP surface is doubled (no store, no training), so CLI tests can check what goes over the wire and how
server answers — including OpenAI error bodies — are shown, without a real server.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names
    body: bytes

    def json(self):
        return json.loads(self.body)


Reply = tuple[int, object]  # (status, JSON body) or (status, bytes) for raw bodies
Route = Reply | Callable[[Request], Reply]


@dataclass
class ApiDouble:
    routes: dict[tuple[str, str], Route] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    base_url: str = ""

    def on(self, method: str, path: str, reply: Route) -> None:
        self.routes[(method, path)] = reply

    def calls(self, method: str | None = None) -> list[tuple[str, str]]:
        return [(r.method, r.path) for r in self.requests if method in (None, r.method)]


def error_body(message: str, code: str | None, param: str | None = None, type_: str = "invalid_request_error"):
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def _handler(double: ApiDouble):
    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            url = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            headers = {k.lower(): v for k, v in self.headers.items()}
            req = Request(self.command, url.path, parse_qs(url.query), headers, self.rfile.read(length))
            double.requests.append(req)
            route = double.routes.get((self.command, url.path))
            if route is None:
                status, body = 404, error_body(f"No route {self.command} {url.path}", "not_found")
            else:
                status, body = route(req) if callable(route) else route
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(status)
            self.send_header(
                "Content-Type", "application/octet-stream" if isinstance(body, bytes) else "application/json"
            )
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_DELETE = _serve

        def log_message(self, *args) -> None:  # keep test output clean
            pass

    return Handler


def start_double() -> tuple[ApiDouble, Callable[[], None]]:
    double = ApiDouble()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(double))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    double.base_url = f"http://127.0.0.1:{server.server_address[1]}/v1"

    def stop() -> None:
        server.shutdown()
        server.server_close()

    return double, stop
