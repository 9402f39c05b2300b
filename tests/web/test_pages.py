"""The dashboard's pages and actions through the real app in-process (no browser): pagination, the status
filter, escaping, sign-in cookies, CSRF/Origin refusals, single-user loopback, and that its assets ship.
"""

from __future__ import annotations

import re
import tomllib
from fnmatch import fnmatch
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.conftest import TINY

ROOT = Path(__file__).resolve().parents[2]
XSS = "<img src=x onerror=alert(1)>"


def make_jobs(settings, project: str, n: int, **spec_overrides) -> list[str]:
    from tunehouse.store import jobs
    from tunehouse.store.db import connect

    conn = connect(settings)
    try:
        spec = {"model": TINY, "base_model": TINY, "training_file": "file-x", "seed": 1,
                "hyperparameters": {"n_epochs": "auto"}, **spec_overrides}
        return [jobs.create_job(conn, settings, project, spec)["id"] for _ in range(n)]
    finally:
        conn.close()


def job_ids(html: str) -> list[str]:
    return re.findall(r'data-job-id="(ftjob-[^"]+)"', html)


@pytest.fixture
def single(settings):
    from tunehouse.api.app import create_app

    with TestClient(create_app(settings)) as c:
        yield c


@pytest.fixture
def keyed(settings):
    from tunehouse.api.app import create_app

    settings = settings.model_copy(update={"api_keys": "alpha:key-alpha,beta:key-beta"})
    with TestClient(create_app(settings), follow_redirects=False) as c:
        c.settings = settings
        yield c


def sign_in(client, key: str) -> str:
    r = client.post("/signin", data={"key": key, "next": "/"})
    assert r.status_code == 303 and r.headers["location"] == "/"
    return r.headers["set-cookie"]


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def test_job_list_is_newest_first_and_paginated(single, settings):
    made = make_jobs(settings, "default", 120)
    first = single.get("/")
    assert first.status_code == 200 and "<title>Fine-tuning jobs · tunehouse</title>" in first.text
    page1 = job_ids(first.text)
    assert page1 == made[::-1][:50]
    page2 = job_ids(single.get(f"/?after={page1[-1]}").text)
    page3_html = single.get(f"/?after={page2[-1]}").text
    assert page2 == made[::-1][50:100] and job_ids(page3_html) == made[::-1][100:]
    assert 'rel="next"' not in page3_html  # the last page links no further


def test_status_filter_shows_only_that_status(single, settings):
    from tunehouse.store import jobs
    from tunehouse.store.db import connect

    a, b = make_jobs(settings, "default", 2)
    conn = connect(settings)
    jobs.cancel_job(conn, "default", a)
    conn.close()
    assert job_ids(single.get("/?status=cancelled").text) == [a]
    assert job_ids(single.get("/?status=validating_files").text) == [b]
    assert set(job_ids(single.get("/?status=").text)) == {a, b}  # the form's "all"
    bogus = single.get("/?status=bogus")
    assert bogus.status_code == 400 and "Unknown job status &#39;bogus&#39;" in bogus.text


def test_user_strings_are_escaped_everywhere(single, settings, tmp_path):
    from tunehouse.store import files
    from tunehouse.store.db import connect

    (job_id,) = make_jobs(settings, "default", 1, suffix=XSS, metadata={"note": XSS})
    src = tmp_path / "up.jsonl"
    src.write_text('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\n')
    conn = connect(settings)
    file_id = files.add_file(conn, settings, project="default", filename=XSS + ".jsonl", purpose="fine-tune",
                             src=src)["id"]
    conn.close()
    for path in ("/", f"/jobs/{job_id}", "/files", f"/files/{file_id}"):
        html = single.get(path).text
        assert XSS not in html and "&lt;img src=x onerror=alert(1)&gt;" in html, path
    assert "script-src 'self'" in single.get("/files").headers["content-security-policy"]


def test_file_page_shows_the_validation_report_by_line(single, settings, tmp_path):
    from tunehouse.store import files
    from tunehouse.store.db import connect

    src = tmp_path / "bad.jsonl"
    good = '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}'
    src.write_text(f"{good}\nnot json\n{good}\n")
    conn = connect(settings)
    row = files.add_file(conn, settings, project="default", filename="bad.jsonl", purpose="fine-tune", src=src)
    conn.close()
    html = single.get(f"/files/{row['id']}").text
    errors = re.search(r'<table class="list" id="errors">(.*?)</table>', html, re.S).group(1)
    assert re.search(r"<td>2</td><td>[a-z_]+</td>", errors)  # the broken line, by number
    assert "Estimate" in html and "Not ready to train" in html


def test_signed_out_visitor_is_sent_to_sign_in_and_sees_no_job(keyed):
    (job_id,) = make_jobs(keyed.settings, "alpha", 1)
    for path in ("/", f"/jobs/{job_id}", f"/jobs/{job_id}/live", "/files", "/models", "/playground"):
        r = keyed.get(path)
        assert r.status_code == 303 and r.headers["location"].startswith("/signin"), path
    page = keyed.get("/signin")
    assert "<title>Sign in · tunehouse</title>" in page.text and job_id not in page.text
    bad = keyed.post("/signin", data={"key": "nope"})
    assert bad.status_code == 401 and "not valid" in bad.text and "set-cookie" not in bad.headers


def test_a_session_cookie_is_http_only_and_scoped_to_its_project(keyed):
    (alpha_job,) = make_jobs(keyed.settings, "alpha", 1)
    cookie = sign_in(keyed, "key-beta")
    assert "httponly" in cookie.lower() and "samesite=lax" in cookie.lower()
    assert job_ids(keyed.get("/").text) == []
    assert keyed.get(f"/jobs/{alpha_job}").status_code == 404
    keyed.cookies.clear()
    sign_in(keyed, "key-alpha")
    assert job_ids(keyed.get("/").text) == [alpha_job]
    assert keyed.get("/signin?next=//evil.example").text.count('value="/"') == 1  # no open redirect


def test_actions_need_the_csrf_token_and_our_origin(keyed):
    from tunehouse.store import jobs
    from tunehouse.store.db import connect

    (job_id,) = make_jobs(keyed.settings, "alpha", 1)
    sign_in(keyed, "key-alpha")
    token = csrf_of(keyed.get(f"/jobs/{job_id}").text)
    assert keyed.post(f"/jobs/{job_id}/cancel").status_code == 403
    assert keyed.post(f"/jobs/{job_id}/cancel", data={"csrf_token": "forged"}).status_code == 403
    foreign = keyed.post(f"/jobs/{job_id}/cancel", data={"csrf_token": token},
                         headers={"Origin": "https://evil.example"})
    assert foreign.status_code == 403
    conn = connect(keyed.settings)
    assert jobs.get_job(conn, "alpha", job_id)["status"] == "validating_files"  # nothing happened
    ok = keyed.post(f"/jobs/{job_id}/cancel", data={"csrf_token": token}, headers={"Origin": "http://testserver"})
    assert ok.status_code == 303 and jobs.get_job(conn, "alpha", job_id)["status"] == "cancelled"
    conn.close()
    again = keyed.post(f"/jobs/{job_id}/cancel", data={"csrf_token": token})
    assert again.status_code == 400 and "already cancelled" in again.text
    login_csrf = keyed.post("/signin", data={"key": "key-alpha"}, headers={"Origin": "https://evil.example"})
    assert login_csrf.status_code == 403


def test_pause_and_resume_buttons_drive_the_stores_transitions(single, settings):
    (job_id,) = make_jobs(settings, "default", 1)
    html = single.get(f"/jobs/{job_id}").text
    assert 'id="pause-button"' not in html and 'id="cancel-button"' in html  # validating_files: cancel only
    from tunehouse.store import jobs
    from tunehouse.store.db import connect

    conn = connect(settings)
    jobs.mark_validated(conn, job_id)
    token = csrf_of(single.get(f"/jobs/{job_id}").text)
    single.post(f"/jobs/{job_id}/pause", data={"csrf_token": token})
    paused = single.get(f"/jobs/{job_id}").text
    assert jobs.get_job(conn, "default", job_id)["status"] == "paused" and 'id="resume-button"' in paused
    single.post(f"/jobs/{job_id}/resume", data={"csrf_token": token})
    assert jobs.get_job(conn, "default", job_id)["status"] == "queued"
    events = single.get(f"/jobs/{job_id}/live").json()["events"]
    assert [e["message"] for e in events[:2]] == ["Fine-tuning job resumed", "Fine-tuning job paused"]
    conn.close()


def test_the_live_json_sends_only_steps_the_page_does_not_have(single, settings):
    from tunehouse.store.db import connect
    from tunehouse.store.metrics import record_metrics

    (job_id,) = make_jobs(settings, "default", 1)
    conn = connect(settings)
    for step in (1, 2, 3):
        record_metrics(conn, job_id, {"step": step, "total_steps": 10, "train_loss": 5.0 - step}, None)
    conn.close()
    full = single.get(f"/jobs/{job_id}/live").json()
    assert [m["step"] for m in full["metrics"]] == [1, 2, 3] and full["final"] is False
    newer = single.get(f"/jobs/{job_id}/live?after_step=2").json()
    assert [m["train_loss"] for m in newer["metrics"]] == [2.0]
    caught_up = single.get(f"/jobs/{job_id}/live?after_step=3").json()
    assert caught_up["metrics"] == [] and caught_up["progress"]["step"] == 3 and caught_up["progress"]["percent"] == 30


def test_single_user_mode_serves_loopback_only(settings):
    from tunehouse.api.app import create_app

    with TestClient(create_app(settings), client=("10.1.2.3", 5000)) as remote:
        r = remote.get("/")
        assert r.status_code == 403 and "loopback" in r.text
    with TestClient(create_app(settings), client=("127.0.0.1", 5000)) as local:
        assert local.get("/").status_code == 200


def test_the_api_keeps_its_json_errors(single):
    r = single.get("/v1/fine_tuning/jobs/ftjob-nope")
    assert r.status_code == 404 and r.json()["error"]["code"] == "fine_tuning_job_not_found"


def test_every_template_and_asset_ships_as_package_data():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["tunehouse"]
    pkg = ROOT / "src" / "tunehouse"
    shipped = [p.relative_to(pkg).as_posix() for p in (pkg / "web").rglob("*")
               if p.is_file() and p.suffix != ".py" and "__pycache__" not in p.parts]
    assert shipped and all(any(fnmatch(f, g) for g in config) for f in shipped), shipped
    for path in (pkg / "web").rglob("*.html"):  # offline: nothing from another host
        assert not re.search(r"(src|href)=\"(https?:)?//", path.read_text()), path
