"""Uploads stream to disk: a 64 MiB upload does not grow the server's memory by anything like 64 MiB."""

from __future__ import annotations

import psutil

from tests.api.live import LiveServer, SchemaLog, make_data_dir, sdk_client

SIZE = 64 * 1024 * 1024


def test_large_upload_streams_to_disk_with_bounded_server_memory(tmp_path, tiny_model_dir):
    big = tmp_path / "big.bin"
    with open(big, "wb") as f:
        for _ in range(SIZE // (1 << 20)):
            f.write(b"0123456789abcdef" * (1 << 16))
    server = LiveServer(make_data_dir(tmp_path, tiny_model_dir)).start()
    try:
        log = SchemaLog()
        client = sdk_client(server, log)
        client.files.create(file=("warmup.bin", b"x" * 1024), purpose="assistants")
        proc = psutil.Process(server.proc.pid)
        before = proc.memory_info().rss
        uploaded = client.files.create(file=big.open("rb"), purpose="assistants")
        grown = proc.memory_info().rss - before
        print(f"RSS growth for a 64 MiB upload: {grown / 2**20:.1f} MiB")
        assert uploaded.bytes == SIZE
        assert grown < SIZE // 4, f"server RSS grew by {grown / 2**20:.1f} MiB for a 64 MiB upload"
        assert (server.data_dir / "files" / uploaded.id).stat().st_size == SIZE
        assert log.problems == []
    finally:
        server.stop()
