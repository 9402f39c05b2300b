"""/v1/files through the official openai SDK against a live server."""

from __future__ import annotations

import httpx2
import openai
import pytest

from tests.api.live import chat_file, check_response


def test_upload_retrieve_content_roundtrip_exact_bytes(client, tmp_path):
    path = tmp_path / "raw.jsonl"
    data = '{"messages": [{"role": "user", "content": "h\u00e9"}, {"role": "assistant", "content": "x"}]}\r\n'.encode()
    data = data * 12 + b"\xef\xbb\xbf"  # CRLF, non-ASCII and a stray BOM: must come back byte for byte
    path.write_bytes(data)
    f = client.files.create(file=path.open("rb"), purpose="fine-tune")
    assert f.bytes == len(data) and f.filename == "raw.jsonl" and f.purpose == "fine-tune"
    assert client.files.retrieve(f.id).id == f.id
    assert client.files.content(f.id).read() == data


def test_client_path_is_reduced_to_its_basename(client):
    f = client.files.create(file=("/home/me/data/deep/train.jsonl", b"{}\n"), purpose="assistants")
    assert f.filename == "train.jsonl"
    f = client.files.create(file=("C:\\Users\\me\\win.jsonl", b"{}\n"), purpose="assistants")
    assert f.filename == "win.jsonl"


def test_fine_tune_upload_is_validated_and_status_carries_the_verdict(client, tmp_path):
    good = client.files.create(file=chat_file(tmp_path, 12).open("rb"), purpose="fine-tune")
    assert good.status == "processed"
    # Too few examples still uploads fine (OpenAI fails the job instead).
    few = client.files.create(file=chat_file(tmp_path, 5, "few.jsonl").open("rb"), purpose="fine-tune")
    assert few.status == "processed"
    bad = client.files.create(file=("bad.jsonl", b'{"messages": [}\nnot json\n'), purpose="fine-tune")
    assert bad.status == "error"
    assert "invalid_json" in bad.status_details or "line 1" in bad.status_details


def test_list_paginates_with_after_limit_order_and_purpose(client):
    ids = [client.files.create(file=(f"p{i}.txt", b"x"), purpose="user_data").id for i in range(3)]
    page = client.files.list(purpose="user_data", limit=2, order="asc")
    assert len(page.data) == 2 and page.has_more
    everything = [f.id for f in client.files.list(purpose="user_data", order="asc")]  # SDK follows `after`
    assert everything[-3:] == ids
    newest_first = [f.id for f in client.files.list(purpose="user_data", order="desc", limit=3).data]
    assert newest_first == ids[::-1]
    after = client.files.list(purpose="user_data", order="desc", after=ids[2], limit=1)
    assert [f.id for f in after.data] == [ids[1]]


def test_delete_then_retrieve_is_404(client):
    f = client.files.create(file=("gone.txt", b"bye"), purpose="assistants")
    deleted = client.files.delete(f.id)
    assert deleted.deleted and deleted.id == f.id
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(f.id)
    with pytest.raises(openai.NotFoundError):
        client.files.content(f.id)


def test_unknown_file_is_404_with_openai_error_body(client):
    with pytest.raises(openai.NotFoundError) as e:
        client.files.retrieve("file-doesnotexist")
    assert e.value.body["type"] == "invalid_request_error" and "file-doesnotexist" in e.value.body["message"]


def test_wrong_purpose_is_400_naming_purpose(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.files.create(file=("a.jsonl", b"{}\n"), purpose="fine-tuning")  # type: ignore[arg-type]
    assert e.value.body["param"] == "purpose"


def test_oversize_upload_is_413_and_nothing_is_kept(client, keyed_server):
    before = len(list(client.files.list()))
    # Limit is 200 kB here: 300 kB is cut off while streaming, 3 MB is refused from its Content-Length.
    for size in (300_000, 3_000_000):
        with pytest.raises(openai.APIStatusError) as e:
            client.files.create(file=("big.bin", b"x" * size), purpose="assistants")
        assert e.value.status_code == 413 and e.value.body["code"] == "file_too_large"
    assert len(list(client.files.list())) == before
    leftovers = [p for p in (keyed_server.data_dir / "files").iterdir() if p.name.startswith(".upload-")]
    assert leftovers == []


def test_files_of_another_project_are_invisible(client, other_client):
    mine = client.files.create(file=("mine.txt", b"secret"), purpose="assistants")
    with pytest.raises(openai.NotFoundError):
        other_client.files.retrieve(mine.id)
    with pytest.raises(openai.NotFoundError):
        other_client.files.delete(mine.id)
    assert mine.id not in {f.id for f in other_client.files.list()}


_FILE_PART = b'--B\r\nContent-Disposition: form-data; name="file"; filename="a.jsonl"\r\n\r\n{}\n'
_PURPOSE_PART = b'--B\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nassistants\r\n'


@pytest.mark.parametrize("body", [
    pytest.param(b"--B\r\n\r\n{}\n\r\n--B--\r\n", id="fuzzed-no-part-headers"),
    pytest.param(_PURPOSE_PART + _FILE_PART + b"\r\n--B\r\n\r\nx\r\n--B--\r\n", id="nameless-part-after-file"),
    pytest.param(b"--Bxyz garbage\r\n\r\n", id="garbage-after-boundary"),
    pytest.param(b"garbage\r\n--B\r\n", id="garbage-before-boundary"),
    pytest.param(b"--B\r\nno-colon-here\r\n\r\nx\r\n--B--\r\n", id="header-without-colon"),
    pytest.param(b"--B\r\n\n\n", id="bare-lf-after-boundary"),
    pytest.param(_PURPOSE_PART + _FILE_PART + b"{}\n", id="truncated-no-closing-boundary"),
])
def test_malformed_multipart_is_400_on_file_and_leaves_no_temp_file(keyed_server, body):
    before = len(httpx2.get(f"{keyed_server.base_url}/files", headers=keyed_server.auth_header()).json()["data"])
    r = httpx2.post(f"{keyed_server.base_url}/files", content=body,
                    headers={**keyed_server.auth_header(), "Content-Type": "multipart/form-data; boundary=B"})
    assert r.status_code == 400, r.text
    assert check_response("POST", "/v1/files", 400, r.content) == []
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == "file" and error["code"]
    leftovers = [p for p in (keyed_server.data_dir / "files").iterdir() if p.name.startswith(".upload-")]
    assert leftovers == []
    after = httpx2.get(f"{keyed_server.base_url}/files", headers=keyed_server.auth_header()).json()["data"]
    assert len(after) == before
