"""Dashboard sessions live in the database: a visitor signed in through one API server is signed in on every
server of that database (the load balancer may send each request elsewhere), and signing out ends it on all."""

from __future__ import annotations

import httpx

from tests.api.live import LiveServer, make_data_dir


def test_a_session_made_on_one_server_is_honoured_by_another(tmp_path, tiny_model_dir, pg_database_url):
    env = {"TUNEHOUSE_DATABASE_URL": pg_database_url, "TUNEHOUSE_API_KEYS": "team:key-team"}
    data_dir = make_data_dir(tmp_path, tiny_model_dir)
    a, b = LiveServer(data_dir, env=env), LiveServer(data_dir, env=env)
    try:
        a.start(), b.start()
        root_a, root_b = a.base_url.removesuffix("/v1"), b.base_url.removesuffix("/v1")
        signed_out = httpx.get(f"{root_b}/", follow_redirects=False)
        assert signed_out.status_code in (302, 303, 307) and "/signin" in signed_out.headers["location"]
        signin = httpx.post(f"{root_a}/signin", data={"key": "key-team", "next": "/"}, follow_redirects=False)
        assert signin.status_code == 303
        cookies = {"tunehouse_session": signin.cookies["tunehouse_session"]}
        page = httpx.get(f"{root_b}/", cookies=cookies, follow_redirects=False)
        assert page.status_code == 200 and "team" in page.text
        csrf = page.text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
        out = httpx.post(f"{root_b}/signout", data={"csrf_token": csrf}, cookies=cookies, follow_redirects=False)
        assert out.status_code == 303
        assert httpx.get(f"{root_a}/", cookies=cookies, follow_redirects=False).status_code != 200
    finally:
        a.stop(), b.stop()
