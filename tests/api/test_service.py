"""The service end to end against a real uvicorn process: jobs run by real drivers (trials
in-process, LODOTUNE_EXECUTOR=local, to keep the suite fast), real SQLite, real HTTP."""

from __future__ import annotations

import json
import os
import time

import httpx
import pytest
import torch
from typer.testing import CliRunner

from api.cli import app
from api.schemas import TuneRequest
from tests.api.conftest import Server, wait_for
from tests.api.test_driver import _session_members
from tuner.jobs import run_tune_job
from tuner.reproduce import reproduce
from tuner.rundir import RunDir, read_json
from tuner.runtime import JobContext, Runtime

SMALL_TUNE = {
    "task": "rosenbrock",
    "optimizer": "adam",
    "generations": 2,
    "population": 4,
    "step_scale": 0.2,
    "seeds": 2,
    "baselines": ["momentum"],
}
# Long enough to interrupt: LODO trials, several generations, no evaluation.
LONG_TUNE = {
    "task": "rosenbrock",
    "optimizer": "lodo",
    "generations": 5,
    "population": 6,
    "step_scale": 0.5,
    "evaluate": False,
    # vectorized shards of one size on Ray (2 CPUs) and in-process, which the kill test compares
    "members_per_task": 3,
}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie is dead too
        return stat.read().split()[2] != "Z"


def _driver_pid(job: dict) -> int:
    assert job["driver"].startswith("pid "), job["driver"]
    return int(job["driver"].split()[1])


def test_tune_poll_fetch_results_artifacts_and_events(serve, tmp_path):
    server = serve()
    with server.client() as client:
        response = client.post("/tune", json=SMALL_TUNE)
        assert response.status_code == 202
        job_id = response.json()["id"]
        assert response.headers["location"] == f"/jobs/{job_id}"

        # the event stream follows the job to its end
        events = []
        with client.stream("GET", f"/jobs/{job_id}/events") as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            kind = None
            for line in stream.iter_lines():
                if line.startswith("event:"):
                    kind = line.split(":", 1)[1].strip()
                elif line.startswith("data:"):
                    events.append((kind, json.loads(line.split(":", 1)[1])))
                    if kind == "end":
                        break
        kinds = [k for k, _ in events]
        assert kinds.count("generation") == 2 and kinds[-1] == "end" and "progress" in kinds
        assert [p["generation"] for k, p in events if k == "generation"] == [0, 1]
        assert events[-1][1]["status"] == "succeeded"

        job = wait_for(client, job_id)
        assert job["status"] == "succeeded" and job["attempt"] == 1 and job["error"] is None
        assert job["progress"]["generation"] == 2 and job["progress"]["generations"] == 2
        assert job["progress"]["best_fitness"] > 0

        tuned = client.get(f"/jobs/{job_id}/hyperparameters").json()
        run_dir = RunDir(server.artifact_dir / "jobs" / job_id)
        assert tuned == read_json(run_dir.hyperparameters_path)  # the CLI's document
        assert set(tuned["hyperparameters"]) == {"lr", "beta1", "beta2"}

        results = client.get(f"/jobs/{job_id}/results").json()
        assert set(results["optimizers"]) == {"adam", "momentum"}
        assert results["optimizers"]["adam"]["source"] == "tuned"
        assert results["optimizers"]["adam"]["runs"] == 2

        generations = client.get(f"/jobs/{job_id}/generations").json()
        assert [g["generation"] for g in generations] == [0, 1]
        assert generations[1]["record"]["state"]["generation"] == 2

        artifacts = client.get(f"/jobs/{job_id}/artifacts").json()
        assert {"curves.png", "results.json", "hyperparameters.json"} <= set(artifacts)
        png = client.get(artifacts["curves.png"])
        assert png.status_code == 200 and png.headers["content-type"] == "image/png"
        assert png.content.startswith(b"\x89PNG")

        # an evaluation job re-runs the tuned values from the job
        response = client.post(
            "/evaluate",
            json={
                "task": "rosenbrock",
                "optimizers": ["adam"],
                "from_job": job_id,
                "seeds": 2,
                "step_scale": 0.2,
            },
        )
        assert response.status_code == 202
        evaluation = wait_for(client, response.json()["id"])
        assert evaluation["status"] == "succeeded", evaluation["error"]
        document = client.get(f"/jobs/{evaluation['id']}/results").json()
        assert document["optimizers"]["adam"]["hyperparameters"] == tuned["hyperparameters"]
        assert document["optimizers"]["adam"]["mean"] == results["optimizers"]["adam"]["mean"]

        listed = client.get("/jobs", params={"kind": "tune"}).json()
        assert [j["id"] for j in listed["jobs"]] == [job_id]


@pytest.fixture(scope="module")
def worker_server(tmp_path_factory) -> Server:
    """One server whose jobs run (in-process workers) for the tests that need nothing else of it."""
    server = Server(tmp_path_factory.mktemp("workers") / "artifacts").start()
    try:
        yield server
    finally:
        server.stop()


def test_a_job_of_studies_reports_its_median_study_and_their_spread(worker_server):
    server = worker_server
    with server.client() as client:
        job_id = client.post("/tune", json={**SMALL_TUNE, "studies": 2}).json()["id"]
        job = wait_for(client, job_id)
        assert job["status"] == "succeeded", job["error"]
        assert (job["progress"]["study"], job["progress"]["studies"]) == (None, 2)  # none runs now
        tuned = client.get(f"/jobs/{job_id}/hyperparameters").json()
        assert (tuned["studies"], tuned["studies_document"]) == (2, "studies.json")
        artifacts = client.get(f"/jobs/{job_id}/artifacts").json()
        studies = client.get(artifacts["studies.json"]).json()
        assert studies["median_study"] == tuned["study"] and len(studies["per_study"]) == 2
        median = studies["per_study"][tuned["study"]]
        assert median["hyperparameters"] == tuned["hyperparameters"]
        results = client.get(f"/jobs/{job_id}/results").json()
        assert set(results["optimizers"]) == {"adam", "momentum"}
        assert results["optimizers"]["adam"]["mean"] == median["window_loss"]["mean"]
        generations = client.get(f"/jobs/{job_id}/generations").json()
        assert [(g["record"]["study"], g["generation"]) for g in generations] == [
            (0, 0),
            (0, 1),
            (1, 0),
            (1, 1),
        ]


def test_a_reproduce_job_serves_the_report_and_its_plots(worker_server, tmp_path):
    """The service's report equals ``lodotune reproduce``'s in-process one at the same settings."""
    body = {"experiments": ["rosenbrock"], "scale": "paper", "seeds": 2}
    with worker_server.client() as client:
        job_id = client.post("/reproduce", json=body).json()["id"]
        job = wait_for(client, job_id)
        assert job["status"] == "succeeded", job["error"]
        assert (job["kind"], job["task"]) == ("reproduce", "rosenbrock")
        assert "report" in job["links"] and "results" not in job["links"]
        report = client.get(job["links"]["report"]).json()
        artifacts = client.get(job["links"]["artifacts"]).json()
        assert {"report.md", "report.json", "rosenbrock.evaluation.curves.png"} <= set(artifacts)
        assert client.get(artifacts["report.json"]).json() == report
        assert "| lodo | 0.00104 ± 2.14e-05 |" in client.get(artifacts["report.md"]).text
        plot = client.get(artifacts["rosenbrock.evaluation.curves.png"])
        assert plot.headers["content-type"] == "image/png" and plot.content.startswith(b"\x89PNG")
    expected = reproduce(tmp_path, experiments=["rosenbrock"], scale="paper", seeds=2)
    assert [(r["optimizer"], r["ours"], r["verdict"]) for r in report["rows"]] == [
        (r["optimizer"], r["ours"], r["verdict"]) for r in expected["rows"]
    ]


def test_bad_reproduce_requests_are_422_naming_the_field(serve_queue):
    client = serve_queue
    experiments = {e["name"] for e in client.get("/experiments").json()}
    assert experiments == {"rosenbrock", "rosenbrock-ga", "bowl", "image-generation", "resnet"} | {
        "adamqlr-uci-energy",
        "adamqlr-fashion-mnist",
        "onepass-uci-energy",
    }
    for body, words in [
        ({"experiments": ["mnist"]}, "Invalid experiments: 'mnist' (allowed: rosenbrock | rosenbrock-ga"),
        ({"studies": 0}, "studies"),
        ({"scale": "full"}, "scale"),
        ({"scale": "paper", "seeds": 256}, "LODOTUNE_MAX_TRIAL_STEPS"),
    ]:
        response = client.post("/reproduce", json=body)
        assert response.status_code == 422, body
        assert words in json.dumps(response.json()["detail"]), response.json()


def test_kill_9_mid_job_then_restart_resumes_to_the_uninterrupted_result(serve, tmp_path):
    # trials on the driver's own local Ray, as users run it, so the leftovers of a killed Ray show
    artifacts = tmp_path / "artifacts"
    server = serve(artifacts, executor="ray")
    with server.client() as client:
        job_id = client.post("/tune", json=LONG_TUNE).json()["id"]
        deadline = time.monotonic() + 120
        while True:
            job = client.get(f"/jobs/{job_id}").json()
            if job["progress"]["generation"] >= 1:
                break
            assert job["status"] in ("queued", "running") and time.monotonic() < deadline, job
            time.sleep(0.05)
    assert job["progress"]["generation"] < 5, "the job ended before the kill: make it longer"
    driver = _driver_pid(job)
    server.kill()
    deadline = time.monotonic() + 10
    while _alive(driver):  # the driver dies with the API (PR_SET_PDEATHSIG)
        assert time.monotonic() < deadline, "driver outlived the API"
        time.sleep(0.05)

    restarted = serve(artifacts, executor="ray")
    with restarted.client() as client:
        job = wait_for(client, job_id)
        assert job["status"] == "succeeded", job["error"]
        assert job["attempt"] == 2
        resumed = client.get(f"/jobs/{job_id}/hyperparameters").json()
        generations = client.get(f"/jobs/{job_id}/generations").json()
    assert _session_members(driver) == []  # the killed driver's Ray agents were killed on restart

    # the same job, uninterrupted, straight through the tuner
    spec = {**job["spec"]}
    job = TuneRequest.model_validate({**spec, "evaluate": False})
    ctx = JobContext(RunDir(tmp_path / "reference"), Runtime("local"))
    # as the Ray workers (one CPU per trial): a population's reductions may split by thread count
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        reference = run_tune_job(job, ctx)["hyperparameters"]
    finally:
        torch.set_num_threads(threads)
    assert resumed["hyperparameters"] == reference["hyperparameters"]
    assert resumed["normalized_mean"] == reference["normalized_mean"]
    assert [g["generation"] for g in generations] == [0, 1, 2, 3, 4]
    for g in generations:
        # vectorized shards in Ray's workers and in this process agree to rounding (a fitness has
        # differed in its last bits), which leaves the elite, and so the values above, exact
        expected = read_json(RunDir(tmp_path / "reference").generation_path(g["generation"]))
        got = [p["fitness"] for p in g["record"]["population"]]
        want = [p["fitness"] for p in expected["population"]]
        assert [f is None for f in got] == [f is None for f in want]
        assert [f for f in got if f is not None] == pytest.approx(
            [f for f in want if f is not None], rel=1e-12
        )


def test_cancel_running_and_queued_jobs_keeps_finished_generations(serve):
    server = serve(max_concurrent_jobs="1")
    with server.client() as client:
        running_id = client.post("/tune", json={**LONG_TUNE, "generations": 40}).json()["id"]
        queued_id = client.post("/tune", json={**LONG_TUNE, "seed": 1}).json()["id"]
        assert client.get(f"/jobs/{queued_id}").json()["status"] == "queued"

        cancelled = client.post(f"/jobs/{queued_id}/cancel")
        assert cancelled.status_code == 200
        assert wait_for(client, queued_id, timeout=10)["status"] == "cancelled"

        deadline = time.monotonic() + 120
        while client.get(f"/jobs/{running_id}").json()["progress"]["generation"] < 1:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        driver = _driver_pid(client.get(f"/jobs/{running_id}").json())
        assert client.post(f"/jobs/{running_id}/cancel").json()["cancel_requested"] is True
        job = wait_for(client, running_id, timeout=30)
        assert job["status"] == "cancelled" and job["finished_at"] is not None
        assert not _alive(driver)
        kept = client.get(f"/jobs/{running_id}/generations").json()
        assert len(kept) >= 1 and job["progress"]["generation"] == len(kept) < 40
        assert client.get(f"/jobs/{running_id}/hyperparameters").status_code == 409
        again = client.post(f"/jobs/{running_id}/cancel")
        assert again.status_code == 409 and "already cancelled" in again.json()["detail"]
        assert client.get(f"/jobs/{queued_id}").json()["attempt"] == 0  # never started


def test_bearer_token_guards_everything_but_healthz(serve):
    server = serve(api_token="s3cret-token", launcher="queue")
    with server.client() as anonymous:
        assert anonymous.get("/healthz").status_code == 200
        for method, path in (("GET", "/jobs"), ("GET", "/tasks"), ("POST", "/tune"), ("GET", "/optimizers")):
            response = anonymous.request(method, path, json=SMALL_TUNE)
            assert response.status_code == 401, path
            assert response.headers["www-authenticate"] == "Bearer"
    with server.client(token="s3cret-tokeN") as wrong:
        assert wrong.get("/jobs").status_code == 401
    with server.client(token="s3cret-token") as right:
        assert right.get("/jobs").status_code == 200
        assert right.post("/tune", json=SMALL_TUNE).status_code == 202


def test_idempotency_key(serve):
    server = serve(launcher="queue")
    with server.client() as client:
        first = client.post("/tune", json=SMALL_TUNE, headers={"Idempotency-Key": "abc-1"})
        again = client.post("/tune", json=SMALL_TUNE, headers={"Idempotency-Key": "abc-1"})
        assert first.status_code == 202 and again.status_code == 200
        assert (
            again.json()["id"] == first.json()["id"]
            and again.headers["location"] == first.headers["location"]
        )
        other = client.post("/tune", json={**SMALL_TUNE, "seed": 7}, headers={"Idempotency-Key": "abc-1"})
        assert other.status_code == 409 and "abc-1" in other.json()["detail"]
        # the same key on the other endpoint is another body too
        evaluate = client.post(
            "/evaluate",
            json={"task": "rosenbrock", "optimizers": ["adam"]},
            headers={"Idempotency-Key": "abc-1"},
        )
        assert evaluate.status_code == 409
        without = client.post("/tune", json=SMALL_TUNE)
        assert without.status_code == 202 and without.json()["id"] != first.json()["id"]
        assert len(client.get("/jobs").json()["jobs"]) == 2


@pytest.mark.parametrize(
    ("body", "loc", "words"),
    [
        (
            {**SMALL_TUNE, "task": "mnist"},
            ["body", "task"],
            "Invalid task: 'mnist' (allowed: noisy-quadratic-bowl",
        ),
        ({**SMALL_TUNE, "optimizer": "adamw"}, ["body", "optimizer"], "Invalid optimizer: 'adamw'"),
        # the GA's settings, given at the top as before, are checked as its strategy_options
        (
            {**SMALL_TUNE, "population": 1},
            ["body", "strategy_options", "ga", "population"],
            "greater than or equal to 2",
        ),
        (
            {**SMALL_TUNE, "generations": 0},
            ["body", "strategy_options", "ga", "generations"],
            "greater than or equal to 1",
        ),
        ({**SMALL_TUNE, "baselines": ["sgdx"]}, ["body", "baselines", 0], "Invalid optimizer: 'sgdx'"),
        ({**SMALL_TUNE, "step_scale": 0}, ["body", "step_scale"], "greater than 0"),
        (
            {**SMALL_TUNE, "studies": 0},
            ["body", "studies"],
            "Invalid studies: 0 (allowed: an integer from 1 to 64)",
        ),
        (
            {**SMALL_TUNE, "studies": 65},
            ["body", "studies"],
            "Invalid studies: 65 (allowed: an integer from 1 to 64)",
        ),
        (
            {**SMALL_TUNE, "schedule": "table5"},
            ["body", "strategy_options", "ga", "schedule"],
            "'code' or 'paper'",
        ),
        (
            {"task": "rosenbrock", "optimizer": "adam", "strategy_options": {"population": 4, "sigma": 2}},
            ["body", "strategy_options", "ga"],
            "Invalid ga option 'sigma' (allowed: schedule | generations | population",
        ),
        (
            {
                "task": "digits-mlp",
                "optimizer": "adam",
                "strategy": "asha",
                "strategy_options": {"max_t": "9"},
            },
            ["body", "strategy_options", "asha", "max_t"],
            "Input should be a valid integer",
        ),
        (
            {**SMALL_TUNE, "meta_dtype": "float32"},
            ["body"],
            "Invalid meta_dtype: 'float32' is an option of lodo",
        ),
        (
            {**SMALL_TUNE, "optimizer": "lodo", "meta_dtype": "float16"},
            ["body", "meta_dtype"],
            "'float32' or",
        ),
        ({**SMALL_TUNE, "optimizer": "newton"}, ["body"], "'newton' has no hyperparameters to tune"),
        (
            {**SMALL_TUNE, "task_options": {"width": 3}},
            ["body"],
            "Unknown option 'width' for task 'rosenbrock'",
        ),
        ({**SMALL_TUNE, "devices": "cuda"}, ["body", "devices"], "Extra inputs are not permitted"),
        (
            {"task": "digits-mlp", "strategy": "onepass", "strategy_options": {"tuned": 5}},
            ["body", "strategy_options", "onepass", "tuned"],
            "Input should be a valid list",
        ),
        (
            {"task": "digits-mlp", "strategy": "onepass", "strategy_options": {"initial": "lr"}},
            ["body", "strategy_options", "onepass", "initial"],
            "Input should be a valid dictionary",
        ),
    ],
)
def test_bad_tune_requests_are_422_naming_the_field(serve_queue, body, loc, words):
    response = serve_queue.post("/tune", json=body)
    assert response.status_code == 422
    (error,) = response.json()["detail"]
    assert error["loc"] == loc
    assert words in error["msg"]


def test_bad_evaluate_requests_and_lookups(serve_queue):
    response = serve_queue.post(
        "/evaluate",
        json={"task": "rosenbrock", "optimizers": ["adam"], "hyperparameters": {"adam": {"eta": 1}}},
    )
    assert response.status_code == 422
    assert "Invalid hyperparameter 'eta' for adam (allowed: lr | beta1 | beta2)" in response.text
    missing = serve_queue.post(
        "/evaluate", json={"task": "rosenbrock", "optimizers": ["adam"], "from_job": "f" * 32}
    )
    assert missing.status_code == 404
    unknown = "0" * 32
    assert serve_queue.get(f"/jobs/{unknown}").status_code == 404
    assert serve_queue.get("/jobs/not-an-id").status_code == 422
    job_id = serve_queue.post("/tune", json=SMALL_TUNE).json()["id"]
    assert serve_queue.get(f"/jobs/{job_id}/hyperparameters").status_code == 409
    for name in ("..%2F..%2Fetc%2Fpasswd", "lodotune.db", ".hidden"):
        assert serve_queue.get(f"/jobs/{job_id}/artifacts/{name}").status_code in (404, 422), name


def test_registries(serve_queue):
    optimizers = {o["name"]: o for o in serve_queue.get("/optimizers").json()}
    assert optimizers["lodo"]["search_space"]["params"][0]["name"] == "lr"
    assert optimizers["newton"]["search_space"] is None
    tasks = {t["name"]: t for t in serve_queue.get("/tasks").json()}
    assert {s["source"] for s in tasks["rosenbrock"]["schedules"]} == {"code", "paper"}
    assert serve_queue.get("/healthz").json() == {"status": "ok", "launcher": "queue"}


@pytest.fixture(scope="module")
def serve_queue(tmp_path_factory) -> httpx.Client:
    """One queue-only server for the tests that only read and validate."""
    server = Server(tmp_path_factory.mktemp("queue") / "artifacts", launcher="queue").start()
    try:
        with server.client() as client:
            yield client
    finally:
        server.stop()


def test_onepass_and_asha_jobs_through_the_api(serve):
    server = serve(max_concurrent_jobs="2")
    with server.client() as client:
        strategies = {s["name"] for s in client.get("/strategies").json()}
        assert strategies == {"ga", "asha", "onepass"}
        onepass = client.post(
            "/tune",
            json={
                "task": "digits-mlp",
                "strategy": "onepass",
                "strategy_options": {"steps": 30, "initial": {"lr": 0.05}, "initialisations": 2},
            },
        ).json()["id"]
        asha = client.post(
            "/tune",
            json={
                "task": "rosenbrock",
                "optimizer": "adam",
                "strategy": "asha",
                "seeds": 2,
                "step_scale": 0.1,
                "strategy_options": {"num_samples": 4, "grace_period": 5, "report_every": 5},
            },
        ).json()["id"]

        job = wait_for(client, onepass, timeout=180)
        assert job["status"] == "succeeded", job["error"]
        assert job["optimizer"] == "sgd" and job["strategy"] == "onepass"
        document = client.get(f"/jobs/{onepass}/hyperparameters").json()
        assert document["strategy"] == "onepass" and document["initial"]["lr"] == 0.05
        assert set(document["hyperparameters"]) == {"lr", "weight_decay", "momentum"}
        assert client.get(f"/jobs/{onepass}/results").status_code == 200
        # the one-pass values as fixed hyperparameters of the registered sgd
        fixed = client.post(
            "/evaluate",
            json={"task": "digits-mlp", "optimizers": ["sgd"], "from_job": onepass, "seeds": 1, "steps": 20},
        ).json()["id"]
        job = wait_for(client, fixed, timeout=120)
        assert job["status"] == "succeeded", job["error"]
        rerun = client.get(f"/jobs/{fixed}/results").json()["optimizers"]["sgd"]
        assert rerun["hyperparameters"] == document["hyperparameters"] and rerun["source"] == f"job {onepass}"

        job = wait_for(client, asha, timeout=240)
        assert job["status"] == "succeeded", job["error"]
        assert job["progress"]["trials_total"] == 2  # the evaluation phase: 1 optimizer × 2 seeds
        document = client.get(f"/jobs/{asha}/hyperparameters").json()
        assert document["strategy"] == "asha" and set(document["hyperparameters"]) == {"lr", "beta1", "beta2"}
        results = client.get(f"/jobs/{asha}/results").json()
        assert results["steps"] == 20 and results["optimizers"]["adam"]["source"] == "tuned"
        assert "bootstrap.json" in client.get(f"/jobs/{asha}/artifacts").json()


def test_jobs_and_status_commands_read_the_service(serve_queue):
    job_id = serve_queue.post("/tune", json={**SMALL_TUNE, "seed": 11}).json()["id"]
    url = str(serve_queue.base_url).rstrip("/")
    listed = CliRunner().invoke(app, ["jobs", "--url", url, "--json"])
    assert listed.exit_code == 0, listed.output
    assert job_id in [j["id"] for j in json.loads(listed.output)["jobs"]]
    shown = CliRunner().invoke(app, ["status", job_id, "--url", url])
    assert shown.exit_code == 0 and job_id in shown.output and "queued" in shown.output
    missing = CliRunner().invoke(app, ["status", "0" * 32, "--url", url])
    assert missing.exit_code == 2 and "404" in missing.output
    unreachable = CliRunner().invoke(app, ["jobs", "--url", "http://127.0.0.1:9"])
    assert unreachable.exit_code == 2 and "cannot reach" in unreachable.output


def test_jobs_whose_every_trial_raises_fail_with_the_error_not_as_divergence(serve, tmp_path):
    # no MNIST files in the server's data directory: every trial raises when it builds its task
    server = serve(data_dir=str(tmp_path / "no-data"))
    tune = {"task": "mnist-autoregression", "optimizer": "adam", "generations": 1, "population": 2}
    evaluate = {"task": "mnist-autoregression", "optimizers": ["adam"], "seeds": 1, "steps": 2}
    with server.client() as client:
        tune_id = client.post("/tune", json={**tune, "step_scale": 0.001, "evaluate": False}).json()["id"]
        job = wait_for(client, tune_id)
        assert job["status"] == "failed"
        assert "every trial of generation 0 raised an error" in job["error"]
        assert "FileNotFoundError: MNIST train images not found" in job["error"]
        assert client.get(f"/jobs/{tune_id}/generations").json() == []
        assert client.get(f"/jobs/{tune_id}/hyperparameters").status_code == 409  # nothing tuned
        evaluate_id = client.post("/evaluate", json=evaluate).json()["id"]
        job = wait_for(client, evaluate_id)
        assert job["status"] == "failed" and "every evaluation run raised an error" in job["error"]
