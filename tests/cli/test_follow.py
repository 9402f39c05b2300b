"""`fine_tuning.jobs.follow` against the HTTP double: a scripted job runs through its states while we poll."""

from __future__ import annotations

import json

from tests.cli.conftest import JOB
from tunehouse.cli.follow import FollowState, sparkline

JOB_PATH = "/v1/fine_tuning/jobs/ftjob-abc123"


def _event(n: int, message: str, created_at: int, type_: str = "message", data: dict | None = None) -> dict:
    return {
        "id": f"ftevent-{n}",
        "object": "fine_tuning.job.event",
        "created_at": created_at,
        "level": "info",
        "message": message,
        "type": type_,
        "data": data or {},
    }


def _metrics(n: int, step: int, loss: float, t: int) -> dict:
    data = {"step": step, "total_steps": 4, "train_loss": loss, "valid_loss": None, "train_mean_token_accuracy": 0.5}
    return _event(n, f"Step {step}/4: training loss={loss}", t, "metrics", data)


def script_job(api, final: dict, last: list[dict] | None = None) -> None:
    """Each GET of the job advances one stage; events are served up to that stage, newest first."""
    stages = [
        (JOB | {"status": "running"}, [_event(1, "Fine-tuning job started", 100)]),
        (JOB | {"status": "running"}, [_metrics(2, 1, 2.0, 110), _metrics(3, 2, 1.5, 120)]),
        (JOB | {"status": "running"}, [_metrics(4, 3, 1.2, 130), _metrics(5, 4, 1.0, 140)]),
        (final, last or [_event(6, "The job has ended", 150)]),
    ]
    tick = {"n": 0}

    def job(_req):
        tick["n"] = min(tick["n"] + 1, len(stages))
        return 200, stages[tick["n"] - 1][0]

    def events(req):
        shown = [e for _, evs in stages[: tick["n"]] for e in evs][::-1]
        after = req.query.get("after", [None])[0]
        if after:
            shown = shown[[e["id"] for e in shown].index(after) + 1 :]
        limit = int(req.query.get("limit", ["20"])[0])
        return 200, {"object": "list", "data": shown[:limit], "has_more": len(shown) > limit}

    api.on("GET", JOB_PATH, job)
    api.on("GET", JOB_PATH + "/events", events)


def follow(cli, api, *extra):
    return cli(
        "fine_tuning.jobs.follow", "-i", "ftjob-abc123", "--poll-seconds", "0.05", "--base-url", api.base_url, *extra
    )


def test_follow_prints_each_event_once_and_exits_0_on_success(api, cli):
    script_job(api, JOB | {"status": "succeeded", "fine_tuned_model": "ft:tiny:tunehouse::abcd1234"})
    result = follow(cli, api)
    assert result.exit_code == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("[")]
    assert [line.split("] ", 1)[1] for line in lines] == [
        "Fine-tuning job started",
        "Step 1/4: training loss=2.0",
        "Step 2/4: training loss=1.5",
        "Step 3/4: training loss=1.2",
        "Step 4/4: training loss=1.0",
        "The job has ended",
    ]
    assert "ft:tiny:tunehouse::abcd1234" in result.stdout


def test_follow_exits_1_with_the_error_code_when_the_job_fails(api, cli):
    error = {"code": "invalid_n_examples", "message": "Training file has 5 example(s)", "param": "training_file"}
    script_job(api, JOB | {"status": "failed", "error": error})
    result = follow(cli, api)
    assert result.exit_code == 1
    assert "invalid_n_examples" in result.stderr and "Training file has 5 example(s)" in result.stderr


def test_follow_exits_1_when_cancelled(api, cli):
    script_job(api, JOB | {"status": "cancelled"})
    assert follow(cli, api).exit_code == 1


def test_follow_json_waits_and_prints_the_final_job(api, cli):
    final = JOB | {"status": "succeeded", "fine_tuned_model": "ft:tiny:tunehouse::abcd1234", "trained_tokens": 99}
    script_job(api, final)
    result = follow(cli, api, "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == final


def test_follow_unknown_job_is_one_error_line(api, cli):
    result = cli("fine_tuning.jobs.follow", "-i", "ftjob-nope", "--base-url", api.base_url)
    assert result.exit_code == 1 and len(result.stderr.strip().splitlines()) == 1


def test_sparkline_scales_between_min_and_max():
    assert sparkline([3.0, 2.0, 1.0]) == "█▅▁"
    assert sparkline([1.0, 1.0]) == "▄▄"
    assert sparkline([]) == ""
    assert len(sparkline([float(i) for i in range(100)], width=10)) == 10


def test_state_reads_losses_and_eta_from_metrics_events():
    state = FollowState(job=JOB | {"status": "running"})
    state.add_events([_metrics(1, 1, 2.0, 100), _metrics(2, 3, 1.0, 120)])
    assert (state.step, state.total_steps, state.train_loss) == (3, 4, [2.0, 1.0])
    # 2 steps took 20 s, so the last step needs 10 s more after t=120.
    assert state.eta_seconds(now=120) == 10.0
    assert state.eta_seconds(now=125) == 5.0


def test_live_view_shows_status_progress_loss_and_events():
    from rich.console import Console

    from tunehouse.cli.follow import render

    state = FollowState(job=JOB | {"status": "running"})
    state.add_events([_event(1, "Fine-tuning job started", 90), _metrics(2, 1, 2.0, 100), _metrics(3, 3, 1.0, 120)])
    out = Console(width=160, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    out.print(render(state, now=120))
    text = out.export_text()
    assert "running" in text and "step 3/4  75%" in text and "ETA 0:10" in text
    assert "train loss 1.0000 █▁" in text and "Fine-tuning job started" in text


def test_create_with_follow_follows_the_new_job(api, cli):
    script_job(api, JOB | {"status": "succeeded", "fine_tuned_model": "ft:tiny:tunehouse::abcd1234"})
    api.on("POST", "/v1/fine_tuning/jobs", (200, JOB))
    args = ["-t", "file-abc123", "-m", "tiny", "--follow", "--poll-seconds", "0.05", "--base-url", api.base_url]
    result = cli("fine_tuning.jobs.create", *args)
    assert result.exit_code == 0, result.stderr
    assert "The job has ended" in result.stdout


def test_follow_ends_with_a_resume_hint_when_paused(api, cli):
    script_job(api, JOB | {"status": "paused"})
    result = follow(cli, api)
    assert result.exit_code == 1
    assert "fine_tuning.jobs.resume -i ftjob-abc123" in result.stderr


def test_follow_gives_the_no_server_hint_once_the_server_stays_away(cli, monkeypatch):
    from tests.cli.double import start_double
    from tunehouse.cli import follow as follow_module

    api, stop = start_double()
    api.on("GET", JOB_PATH, (200, JOB | {"status": "running"}))
    api.on("GET", JOB_PATH + "/events", (200, {"object": "list", "data": [], "has_more": False}))
    monkeypatch.setattr(follow_module, "RECONNECT_SECONDS", 0.3)
    # The first answer arrives, then the server goes away for good.
    real_poll = follow_module._poll

    def poll_then_stop(client, state, max_pages):
        new = real_poll(client, state, max_pages)
        stop()
        return new

    monkeypatch.setattr(follow_module, "_poll", poll_then_stop)
    result = follow(cli, api)
    assert result.exit_code == 1 and "tunehouse serve" in result.stderr


def _best(n: int, step: int, loss: float, t: int, message: str | None = None) -> dict:
    return _event(n, message or f"New best validation loss {loss:.4f} at step {step}", t,
                  data={"step": step, "best_step": step, "best_valid_loss": loss})


def test_live_view_marks_the_best_step():
    from rich.console import Console

    from tunehouse.cli.follow import render

    state = FollowState(job=JOB | {"status": "running"})
    state.add_events([_metrics(1, 1, 2.0, 100), _best(2, 1, 1.9, 101), _metrics(3, 2, 1.0, 120),
                      _best(4, 2, 1.7, 121), _metrics(5, 3, 0.5, 130)])
    assert state.best == (2, 1.7)
    out = Console(width=160, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    out.print(render(state, now=130))
    assert "best: step 2 (valid loss 1.7000)" in out.export_text()


def test_follow_names_the_best_step_when_the_job_succeeds(api, cli):
    final = [_event(6, "Fine-tuned model = checkpoint of step 3 (best validation loss 1.1000)", 150,
                    data={"best_step": 3, "best_valid_loss": 1.1, "stopped_early": True, "step": 4})]
    script_job(api, JOB | {"status": "succeeded", "fine_tuned_model": "ft:tiny:tunehouse::abcd1234"}, final)
    result = follow(cli, api)
    assert result.exit_code == 0, result.stderr
    assert "the fine-tuned model is the checkpoint of step 3: best validation loss 1.1000" in result.stdout
