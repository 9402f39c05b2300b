"""The dashboard in a real headless Chromium (Debian's, driven by Playwright) against `tunehouse serve` + worker.

One keyed server for the module: a short job runs to the end (checkpoints, evaluation, result files), a long one
is watched live and cancelled from its page. Screenshots of every page land in the module's tmp folder
(`screenshots/`, printed at the end); look at them after a change to the templates or the CSS.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.api.live import LiveServer, SchemaLog, chat_file, make_data_dir, sdk_client, wait_for
from tests.conftest import TINY

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
XSS_NAME = "<img src=x onerror=alert(1)>.jsonl"
LAPTOP, PHONE = {"width": 1366, "height": 900}, {"width": 390, "height": 844}

@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_model_dir):
    srv = LiveServer(make_data_dir(tmp_path_factory.mktemp("web"), tiny_model_dir), worker=True,
                     env={"TUNEHOUSE_API_KEYS": "alpha:key-alpha,beta:key-beta"}).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client(server):
    return sdk_client(server, SchemaLog(), "key-alpha")


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    folder = tmp_path_factory.mktemp("screenshots")
    yield folder
    print(f"\nscreenshots: {folder}")


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    # A hard dependency: without it these tests fail (never skip); scripts/test.sh installs Debian's package.
    assert shutil.which(CHROMIUM), f"{CHROMIUM} not found: apt-get install chromium (bash scripts/test.sh does)"
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture(scope="module")
def finished(client, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("files")
    train = client.files.create(file=chat_file(tmp, 12).open("rb"), purpose="fine-tune")
    valid = client.files.create(file=chat_file(tmp, 4, "valid.jsonl", "wikisql_sample.jsonl").open("rb"),
                                purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model=TINY, training_file=train.id, validation_file=valid.id,
                                         suffix="web-run", seed=3, hyperparameters={"n_epochs": 2, "batch_size": 4})
    return wait_for(lambda: (j := client.fine_tuning.jobs.retrieve(job.id)).status in ("succeeded", "failed") and j,
                    timeout=300)


def signed_in_page(browser, server, key: str = "key-alpha", viewport=LAPTOP):
    page = browser.new_context(viewport=viewport).new_page()
    page.goto(f"http://127.0.0.1:{server.port}/")
    assert page.url.endswith("/signin?next=/")
    page.fill("input[name=key]", key)
    page.click("button[type=submit]")
    page.wait_for_url(f"http://127.0.0.1:{server.port}/")
    return page


def chart_points(page) -> int:
    return int(page.get_attribute("#loss-chart", "data-points"))


def wait_until(page_check, timeout: float = 60):
    """Poll from Python: Playwright's wait_for_function evaluates strings, which the dashboard's CSP forbids."""
    return wait_for(page_check, timeout=timeout, interval=0.25)


def no_horizontal_overflow(page) -> bool:
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


def test_a_signed_out_visitor_sees_no_job(browser, server, finished, shots):
    page = browser.new_context(viewport=LAPTOP).new_page()
    for path in ("/", f"/jobs/{finished.id}", "/files"):
        page.goto(f"http://127.0.0.1:{server.port}{path}")
        assert page.title() == "Sign in · tunehouse"
        # Nothing of the job shows (its id is only echoed where the visitor typed it: the sign-in's next=).
        assert finished.fine_tuned_model not in page.content() and "web-run" not in page.content()
        assert path != "/" or finished.id not in page.content()
    page.fill("input[name=key]", "wrong-key")
    page.click("button[type=submit]")
    assert "not valid" in page.inner_text("[role=alert]") and finished.id not in page.content()
    page.screenshot(path=shots / "signin.png", full_page=True)
    other = signed_in_page(browser, server, "key-beta")  # another project's key sees none of alpha's jobs
    assert other.locator("[data-job-id]").count() == 0 and finished.id not in other.content()


def test_the_job_appears_on_the_jobs_page(browser, server, finished, shots):
    assert finished.status == "succeeded", finished.error
    page = signed_in_page(browser, server)
    row = page.locator(f"tr[data-job-id='{finished.id}']")
    assert "succeeded" in row.inner_text() and "web-run" in row.inner_text()
    assert finished.fine_tuned_model in row.inner_text()
    page.screenshot(path=shots / "jobs-laptop.png", full_page=True)
    phone = signed_in_page(browser, server, viewport=PHONE)
    assert no_horizontal_overflow(phone)
    phone.screenshot(path=shots / "jobs-phone.png", full_page=True)


def test_a_finished_job_shows_chart_checkpoints_evaluation_and_files(browser, server, finished, shots):
    page = signed_in_page(browser, server)
    page.goto(f"http://127.0.0.1:{server.port}/jobs/{finished.id}")
    assert page.title() == f"Job {finished.id} · tunehouse"
    wait_until(lambda: chart_points(page) == 6)
    assert page.locator("#loss-chart .pt-valid").count() >= 1
    assert page.locator("#checkpoints tbody tr").count() == 2
    assert "Evaluation on 4 validation examples" in page.inner_text("body")
    assert page.locator("#evaluation tbody tr").count() >= 1
    with page.expect_download() as download:
        page.click("text=step_metrics.csv")
    assert download.value.path().read_text().startswith("step,train_loss")
    assert page.locator("#cancel-button").count() == 0  # a finished job has nothing to cancel
    page.screenshot(path=shots / "job-finished-laptop.png", full_page=True)
    phone = signed_in_page(browser, server, viewport=PHONE)
    phone.goto(f"http://127.0.0.1:{server.port}/jobs/{finished.id}")
    wait_until(lambda: chart_points(phone) == 6)
    assert no_horizontal_overflow(phone)
    phone.screenshot(path=shots / "job-finished-phone.png", full_page=True)


def test_the_chart_grows_live_and_cancel_from_the_page_works(browser, server, client, finished, tmp_path, shots):
    train = client.files.create(file=chat_file(tmp_path, 12).open("rb"), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model=TINY, training_file=train.id,
                                         hyperparameters={"n_epochs": 50, "batch_size": 1})
    page = signed_in_page(browser, server)
    page.goto(f"http://127.0.0.1:{server.port}/jobs/{job.id}")
    page.evaluate("window.sameDocument = true")  # survives only if the page never reloads
    first = wait_until(lambda: chart_points(page), timeout=120)
    wait_until(lambda: chart_points(page) > first)
    assert page.evaluate("window.sameDocument") is True
    assert page.inner_text("#job-status") == "running" and "step " in page.inner_text("#job-progress")
    page.screenshot(path=shots / "job-running.png", full_page=True)
    page.on("dialog", lambda dialog: dialog.accept())
    page.click("#cancel-button")
    wait_until(lambda: page.inner_text("#job-status") == "cancelled")
    assert client.fine_tuning.jobs.retrieve(job.id).status == "cancelled"
    assert "Fine-tuning job cancelled" in page.inner_text("#events")
    page.screenshot(path=shots / "job-cancelled.png", full_page=True)


def test_the_playground_streams_two_answers_side_by_side(browser, server, client, finished, shots):
    page = signed_in_page(browser, server)
    page.goto(f"http://127.0.0.1:{server.port}/playground")
    assert page.title() == "Playground · tunehouse"
    page.select_option("#model-left", TINY)
    page.select_option("#model-right", finished.fine_tuned_model)
    page.fill("#system", "You are terse.")
    page.fill("#prompt", "What is your name?")
    page.fill("#temperature", "0")
    page.fill("#max-tokens", "12")
    page.click("#send")
    for side in ("left", "right"):
        wait_until(lambda side=side: page.get_attribute(f"#answer-{side}", "data-done") == "true", timeout=120)
        assert page.inner_text(f"#status-{side}").startswith("done")
    # The same inference path as /v1/chat/completions: greedy answers match the API's, word for word.
    messages = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "What is your name?"}]
    for side, model in (("left", TINY), ("right", finished.fine_tuned_model)):
        api = client.chat.completions.create(model=model, messages=messages, temperature=0, max_tokens=12)
        shown = page.evaluate(f"document.getElementById('answer-{side}').textContent")
        assert shown == api.choices[0].message.content and shown
    assert int(page.inner_text("#status-left").split(", ")[-1].split()[0]) >= 2  # arrived in several chunks
    page.screenshot(path=shots / "playground.png", full_page=True)


def test_an_xss_file_name_shows_as_text(browser, server, client, tmp_path, shots):
    path = chat_file(tmp_path, 3)
    uploaded = client.files.create(file=(XSS_NAME, path.read_bytes()), purpose="fine-tune")
    assert uploaded.filename == XSS_NAME
    page = signed_in_page(browser, server)
    dialogs = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(f"http://127.0.0.1:{server.port}/files")
    assert page.inner_text(f"tr[data-file-id='{uploaded.id}'] .filename") == XSS_NAME
    assert page.locator("img").count() == 0
    page.screenshot(path=shots / "files.png", full_page=True)
    page.click(f"a[href='/files/{uploaded.id}']")
    assert page.inner_text("h1") == XSS_NAME and page.locator("img").count() == 0
    # 3 examples: uploaded fine, but the report says why a job would refuse it, on its own line of the table.
    assert page.inner_text("#verdict").startswith("Not ready to train: 3 chat examples, 1 error(s)")
    assert "too_few_examples" in page.inner_text("#errors") and "Estimate" in page.inner_text("body")
    page.screenshot(path=shots / "file-report.png", full_page=True)
    assert dialogs == []


def test_the_models_page_lists_base_tuned_and_checkpoints(browser, server, finished, shots):
    page = signed_in_page(browser, server)
    page.goto(f"http://127.0.0.1:{server.port}/models")
    text = page.inner_text("#models")
    assert TINY in text and finished.fine_tuned_model in text and f"{finished.fine_tuned_model}:ckpt-step-3" in text
    page.screenshot(path=shots / "models.png", full_page=True)


def test_dump_dom_of_a_single_user_server_lists_a_job_made_with_the_sdk(tmp_path_factory, tiny_model_dir):
    srv = LiveServer(make_data_dir(tmp_path_factory.mktemp("dump"), tiny_model_dir)).start()
    try:
        sdk = sdk_client(srv, SchemaLog())
        train = sdk.files.create(file=chat_file(tmp_path_factory.mktemp("f"), 3).open("rb"), purpose="fine-tune")
        job = sdk.fine_tuning.jobs.create(model=TINY, training_file=train.id, suffix="dumped")
        dom = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom",
                              f"http://127.0.0.1:{srv.port}/"], capture_output=True, text=True, timeout=120).stdout
        assert f'data-job-id="{job.id}"' in dom and "dumped" in dom
        assert f"Dashboard: http://127.0.0.1:{srv.port}/" in srv.log.read_text()  # `tunehouse serve` says where
    finally:
        srv.stop()
