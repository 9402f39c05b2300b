"""The in-process server used by the quickstart, `tunehouse eval` and the live tests."""

from __future__ import annotations

import time

import httpx

from tunehouse.cli.local_server import local_server


def test_server_answers_and_stops_on_exit(settings):
    with local_server(settings) as url:
        assert httpx.get(f"{url}/models", timeout=10).status_code == 200
    try:
        httpx.get(f"{url}/models", timeout=2)
        raise AssertionError("the server still answers after the block")
    except httpx.ConnectError:
        pass


def test_a_dead_worker_stops_the_server_instead_of_leaving_clients_waiting(settings, monkeypatch):
    import tunehouse.worker.main as worker_main

    def broken_worker(*args, **kwargs):
        raise RuntimeError("database is locked")

    monkeypatch.setattr(worker_main, "run_worker", broken_worker)
    with local_server(settings, worker=True) as url:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                httpx.get(f"{url}/models", timeout=2)
            except httpx.ConnectError:
                break
            time.sleep(0.05)
        else:
            raise AssertionError("the server kept running after its worker died")
