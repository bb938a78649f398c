"""The server's limits and input hygiene (issue 13), against a real ``lodotune serve`` with the
queue launcher (jobs are stored, never run): unbounded work, infeasible resources, server paths,
NaN / NUL / lone surrogates on both stores, strict types, body size before parsing with auth
first, short 422s, the queue limit, and a route's ValueError as a clean 500."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import httpx
import pytest
from fastapi.testclient import TestClient

import lodo
import schedules
import tasks
from api.app import create_app, excerpt, validation_details
from api.limits import Limits, ServiceBusy, check_job
from api.schemas import STORED_SPEC, EvaluateRequest, ReproduceRequest, TuneRequest
from api.settings import Settings
from tests.api.conftest import Server
from tuner.reproduce import EXPERIMENTS

TOKEN = "limits-token"
SMALL = {"task": "rosenbrock", "optimizer": "adam", "generations": 2, "population": 4, "step_scale": 0.2}
EVALUATE = {"task": "rosenbrock", "optimizers": ["adam"], "seeds": 2, "steps": 20}


def _post(client: httpx.Client, path: str, body: dict) -> httpx.Response:
    """The body as Python's json writes it: NaN and Infinity as bare tokens, lone surrogates escaped."""
    return client.post(path, content=json.dumps(body), headers={"Content-Type": "application/json"})


def _message(response: httpx.Response) -> str:
    assert response.status_code == 422, (response.status_code, response.text[:500])
    (error,) = response.json()["detail"]
    return error["msg"]


@pytest.fixture(scope="module")
def queue_server(tmp_path_factory) -> Iterator[httpx.Client]:
    server = Server(tmp_path_factory.mktemp("limits") / "artifacts", launcher="queue").start()
    try:
        with server.client() as client:
            yield client
    finally:
        server.stop()


# --- NaN, Infinity, NUL, lone surrogates: 422s naming the field, on SQLite and PostgreSQL -------------

NOT_STORABLE = [
    ("/evaluate", {**EVALUATE, "hyperparameters": {"adam": {"lr": float("nan")}}}, "hyperparameters.adam.lr"),
    ("/evaluate", {**EVALUATE, "hyperparameters": {"adam": {"lr": float("inf")}}}, "hyperparameters.adam.lr"),
    (
        "/evaluate",
        {**EVALUATE, "hyperparameters": {"adam": {"beta1": float("-inf")}}},
        "hyperparameters.adam.beta1",
    ),
    ("/evaluate", {**EVALUATE, "hyperparameters": {"adam": {"lr": "nan"}}}, "hyperparameters.adam.lr"),
    ("/evaluate", {**EVALUATE, "hyperparameters": {"adam": {"lr": "-Infinity"}}}, "hyperparameters.adam.lr"),
    ("/tune", {**SMALL, "step_scale": float("nan")}, "step_scale"),
    ("/tune", {**SMALL, "num_cpus_per_trial": float("inf")}, "num_cpus_per_trial"),
    (
        "/tune",
        {"task": "digits-mlp", "strategy": "onepass", "strategy_options": {"initial": {"lr": float("nan")}}},
        "strategy_options.initial.lr",
    ),
    ("/tune", {**SMALL, "task": "rosenbrock\x00"}, "task: a NUL character"),
    ("/tune", {**SMALL, "task": "rosenbrock\ud800"}, "task: a lone surrogate"),
    (
        "/tune",
        {**SMALL, "strategy_options": {"custom_schedule": {"source": "mine\x00"}}},
        "strategy_options.custom_schedule.source: a NUL character",
    ),
    ("/tune", {**SMALL, "task_options": {"\udfff": 1}}, "key in task_options: a lone surrogate"),
    ("/evaluate", {**EVALUATE, "hyperparameters": {"adam\x00": {"lr": 0.1}}}, "key in hyperparameters"),
]


def test_nan_infinity_nul_and_lone_surrogates_are_422s_naming_the_field_on_both_stores(serve, database_url):
    server = serve(launcher="queue", database_url=database_url)
    with server.client() as client:
        for path, body, words in NOT_STORABLE:
            response = _post(client, path, body)
            assert response.status_code == 422, (words, response.status_code, response.text)
            assert f"Invalid {words}" in _message(response), words
            json.loads(response.text)  # the answer itself is valid JSON: no NaN, no surrogate
        assert client.get("/jobs").json()["jobs"] == []  # none reached the store
        assert _post(client, "/evaluate", EVALUATE).status_code == 202  # and the store still works


# --- unbounded work and infeasible resources: refused naming the field and the limit --------------

UNBOUNDED = [
    ({**SMALL, "num_cpus_per_trial": 256}, "num_cpus_per_trial: 256.0", "LODOTUNE_MAX_CPUS_PER_TRIAL"),
    ({**SMALL, "num_cpus_per_trial": 0}, "num_cpus_per_trial: 0.0", "LODOTUNE_MIN_CPUS_PER_TRIAL"),
    ({**SMALL, "num_gpus_per_trial": 16}, "num_gpus_per_trial: 16.0", "LODOTUNE_MAX_GPUS_PER_TRIAL"),
    (
        {**SMALL, "generations": 1000, "population": 4096, "step_scale": 100},
        "strategy_options.population: 4096",
        "LODOTUNE_MAX_POPULATION",
    ),
    ({**SMALL, "generations": 1000}, "strategy_options.generations: 1000", "LODOTUNE_MAX_GENERATIONS"),
    ({**SMALL, "population": 4096}, "strategy_options.population: 4096", "LODOTUNE_MAX_POPULATION"),
    ({**SMALL, "step_scale": 1e-308}, "step_scale: 1e-308", "LODOTUNE_MIN_STEP_SCALE"),
    (
        {"task": "noisy-quadratic-bowl", "optimizer": "adam", "step_scale": 100},
        "step_scale: 100.0 gives trials of 10000000 steps",
        "LODOTUNE_MAX_STEPS",
    ),
    (
        {"task": "noisy-quadratic-bowl", "optimizer": "adam", "population": 512, "step_scale": 10},
        "job size",
        "LODOTUNE_MAX_TRIAL_STEPS",
    ),
    (
        {
            "task": "digits-mlp",
            "optimizer": "adam",
            "strategy": "asha",
            "strategy_options": {"num_samples": 10**5},
        },
        "strategy_options.num_samples: 100000",
        "LODOTUNE_MAX_NUM_SAMPLES",
    ),
    (
        {
            "task": "digits-mlp",
            "optimizer": "adam",
            "strategy": "asha",
            "strategy_options": {"max_t": 10**7, "budget": "evaluations"},
        },
        "strategy_options.max_t: 10000000",
        "LODOTUNE_MAX_STEPS",
    ),
    (
        {
            "task": "digits-mlp",
            "optimizer": "adam",
            "strategy": "asha",
            "seeds": 8,
            "strategy_options": {"num_samples": 10_000, "max_t": 100_000, "budget": "evaluations"},
        },
        "job size: 1000",
        "LODOTUNE_MAX_TRIAL_STEPS",
    ),
    (
        {"task": "digits-mlp", "strategy": "onepass", "strategy_options": {"steps": 10**7}},
        "strategy_options.steps: 10000000",
        "LODOTUNE_MAX_STEPS",
    ),
    (
        {"task": "noisy-quadratic-bowl", "optimizer": "adam", "task_options": {"n": 10**12}},
        "task_options.n: 1000000000000",
        "LODOTUNE_MAX_TASK_OPTIONS",
    ),
    (
        {"task": "digits-mlp", "optimizer": "adam", "task_options": {"batch_size": 10**9}},
        "task_options.batch_size: 1000000000",
        "LODOTUNE_MAX_BATCH_SIZE",
    ),
]


@pytest.mark.parametrize(("body", "words", "limit"), UNBOUNDED, ids=[w for _, w, _ in UNBOUNDED])
def test_unbounded_or_infeasible_tune_requests_are_refused_naming_the_field_and_the_limit(
    queue_server, body, words, limit
):
    message = _message(_post(queue_server, "/tune", body))
    assert f"Invalid {words}" in message and limit in message


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        # beyond the schemas' own bounds: plain field errors, before any limit
        ({"task": "digits-mlp", "strategy": "onepass", "strategy_options": {"steps": 10**15}}, "steps"),
        (
            {
                "task": "digits-mlp",
                "optimizer": "adam",
                "strategy": "asha",
                "strategy_options": {"num_samples": 10**12},
            },
            "num_samples",
        ),
        ({**SMALL, "num_gpus_per_trial": 17}, "num_gpus_per_trial"),
    ],
)
def test_beyond_the_schema_bounds_is_a_field_error(queue_server, body, loc):
    response = _post(queue_server, "/tune", body)
    assert response.status_code == 422
    (error,) = response.json()["detail"]
    assert error["loc"][-1] == loc


def test_unbounded_evaluate_requests_are_refused(queue_server):
    message = _message(_post(queue_server, "/evaluate", {**EVALUATE, "steps": 10**7}))
    assert "Invalid steps: 10000000" in message and "LODOTUNE_MAX_STEPS" in message
    message = _message(
        _post(
            queue_server,
            "/evaluate",
            {**EVALUATE, "optimizers": list(lodo.OPTIMIZERS), "seeds": 256, "steps": 10**6},
        )
    )
    assert "Invalid job size" in message and "LODOTUNE_MAX_TRIAL_STEPS" in message
    message = _message(_post(queue_server, "/evaluate", {**EVALUATE, "task_options": {"n": 5}}))
    assert "Unknown option 'n' for task 'rosenbrock'" in message


def test_a_data_dir_in_a_request_is_refused(queue_server):
    for path, body in (
        ("/tune", {"task": "mnist-autoregression", "optimizer": "adam"}),
        ("/evaluate", {"task": "uci-energy", "optimizers": ["adam"]}),
    ):
        for data_dir in ("/etc", "~", "../..", "data"):
            message = _message(_post(queue_server, path, {**body, "task_options": {"data_dir": data_dir}}))
            expected = "the data directory is the server's setting (LODOTUNE_DATA_DIR)"
            assert message.endswith(f"Invalid task_options.data_dir: {expected}")


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({**SMALL, "generations": "2"}, ["body", "strategy_options", "ga", "generations"]),
        ({**SMALL, "generations": True}, ["body", "strategy_options", "ga", "generations"]),
        ({**SMALL, "seed": "1"}, ["body", "seed"]),
        ({**SMALL, "seed": True}, ["body", "seed"]),
        ({**SMALL, "seeds": "2"}, ["body", "seeds"]),
        ({**SMALL, "step_scale": "0.5"}, ["body", "step_scale"]),
        ({**SMALL, "step_scale": True}, ["body", "step_scale"]),
        ({**SMALL, "evaluate": 0}, ["body", "evaluate"]),
        ({**SMALL, "evaluate": "false"}, ["body", "evaluate"]),
        ({**SMALL, "num_cpus_per_trial": "1"}, ["body", "num_cpus_per_trial"]),
        ({**SMALL, "num_gpus_per_trial": False}, ["body", "num_gpus_per_trial"]),
    ],
)
def test_job_fields_are_strictly_typed(queue_server, body, loc):
    response = _post(queue_server, "/tune", body)
    assert response.status_code == 422, response.text
    (error,) = response.json()["detail"]
    assert error["loc"] == loc


def test_strict_fields_still_take_json_numbers(queue_server):
    assert (
        _post(queue_server, "/tune", {**SMALL, "step_scale": 1, "num_cpus_per_trial": 1}).status_code == 202
    )
    for bad in ({"steps": "20"}, {"seeds": 2.0}, {"hyperparameters": {"adam": {"lr": "0.1"}}}):
        assert _post(queue_server, "/evaluate", {**EVALUATE, **bad}).status_code == 422, bad
    assert (
        _post(queue_server, "/evaluate", {**EVALUATE, "hyperparameters": {"adam": {"lr": 1}}}).status_code
        == 202
    )


# --- the body: auth before reading it, its size before parsing it, short 422s ------------------------


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def _answer_to_headers_only(server: Server, headers: dict[str, str]) -> int:
    """Send a request's headers announcing 5 MB and none of the body; the status the server answers."""
    lines = ["POST /tune HTTP/1.1", f"Host: 127.0.0.1:{server.port}", "Content-Type: application/json"]
    lines += [f"{k}: {v}" for k, v in {"Content-Length": "5000000", **headers}.items()]
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        status_line = sock.makefile("rb").readline().decode()
    return int(status_line.split()[1])


def test_a_big_body_is_401_without_the_token_and_413_with_it_before_it_is_read(serve):
    server = serve(launcher="queue", api_token=TOKEN)
    authorized = {"Authorization": f"Bearer {TOKEN}"}
    # the answers come without the server reading a byte of the body
    assert _answer_to_headers_only(server, {}) == 401
    assert _answer_to_headers_only(server, {"Authorization": "Bearer wrong"}) == 401
    assert _answer_to_headers_only(server, authorized) == 413

    body = json.dumps({**SMALL, "task": "x" * 5_000_000}).encode()
    before = _rss_mb(server.process.pid)
    for _ in range(3):
        for headers, status in (({}, 401), (authorized, 413)):
            response = httpx.post(
                f"{server.url}/tune", content=body, headers={**headers, "Content-Type": "application/json"}
            )
            assert response.status_code == status, response.text
            if status == 413:
                assert "LODOTUNE_MAX_BODY_BYTES" in response.json()["detail"]
            # sent without a Content-Length (chunked): counted while it is read
            chunks = (body[i : i + 65536] for i in range(0, len(body), 65536))
            response = httpx.post(
                f"{server.url}/tune", content=chunks, headers={**headers, "Content-Type": "application/json"}
            )
            assert response.status_code == status, response.text
    assert _rss_mb(server.process.pid) - before < 50
    assert httpx.get(f"{server.url}/healthz").status_code == 200  # public, no token needed
    assert httpx.get(f"{server.url}/openapi.json").status_code == 200
    with server.client(token=TOKEN) as client:
        assert _post(client, "/tune", SMALL).status_code == 202  # a body under the limit goes through


def test_a_422_shows_a_short_excerpt_of_the_input(queue_server):
    body = {**EVALUATE, "task": "y" * 900_000}
    response = _post(queue_server, "/evaluate", body)
    assert response.status_code == 422 and len(response.content) < 10_000
    (error,) = response.json()["detail"]
    assert error["loc"] == ["body", "task"] and error["msg"].startswith("Value error, Invalid task: 'yyy")
    assert len(json.dumps(error["input"])) < 300
    many = _post(
        queue_server,
        "/evaluate",
        {**EVALUATE, "hyperparameters": {"adam": {f"h{i}": [] for i in range(50_000)}}},
    )
    assert many.status_code == 422 and len(many.content) < 10_000
    assert many.json()["detail"][-1]["type"] == "too_many_errors"


def test_excerpt_and_validation_details():
    assert excerpt(3) == 3 and excerpt(0.5) == 0.5 and excerpt(None) is None and excerpt("ab") == "ab"
    assert excerpt({"a": [1, 2]}) == {"a": [1, 2]}
    assert excerpt(float("nan")) == "nan" and excerpt(10**400).endswith("…")
    assert len(excerpt("z" * 10**6)) <= 210 and len(excerpt({"k": ["v"] * 10**5})) <= 210
    assert excerpt("a\ud800") == "'a\\ud800'"
    (detail,) = validation_details(
        [{"loc": ("body", "k\udc80" * 500), "msg": "m" * 10**5, "type": "t", "input": {}}]
    )
    assert len(detail["msg"]) <= 1001 and len(detail["loc"][1]) <= 201
    json.dumps(detail, allow_nan=False).encode()  # valid, UTF-8-encodable JSON


# --- the queue limit, limits from the environment ---------------------------------------------------


def test_a_full_queue_is_503_with_retry_after_and_limits_come_from_the_environment(serve):
    server = serve(launcher="queue", max_queued_jobs="2", retry_after_s="7", max_population="8")
    with server.client() as client:
        message = _message(_post(client, "/tune", {**SMALL, "population": 10}))
        assert "Invalid strategy_options.population: 10 (allowed: at most 8" in message
        assert _post(client, "/tune", SMALL).status_code == 202
        assert _post(client, "/evaluate", EVALUATE).status_code == 202
        busy = _post(client, "/tune", {**SMALL, "seed": 1})
        assert busy.status_code == 503 and busy.headers["retry-after"] == "7"
        assert "LODOTUNE_MAX_QUEUED_JOBS" in busy.json()["detail"]
        assert len(client.get("/jobs").json()["jobs"]) == 2
        queued = client.get("/jobs").json()["jobs"][0]["id"]
        assert client.post(f"/jobs/{queued}/cancel").status_code == 200
        assert _post(client, "/tune", {**SMALL, "seed": 1}).status_code == 202  # room again


# --- a route's ValueError is a server bug: a clean 500 ----------------------------------------------


def test_a_value_error_in_a_route_is_a_clean_500_and_busy_is_a_503(tmp_path, caplog):
    app = create_app(Settings(artifact_dir=tmp_path / "artifacts", launcher="queue"))

    def broken() -> dict:
        raise ValueError("Invalid internal state: secret /srv/path")

    def busy() -> dict:
        raise ServiceBusy("Service busy: 2 jobs are queued", retry_after=11)

    app.add_api_route("/broken", broken)
    app.add_api_route("/busy", busy)
    with TestClient(app) as client:
        response = client.get("/broken")
        assert response.status_code == 500
        assert response.json() == {
            "detail": "Internal server error (ValueError); the server log has the details"
        }
        assert "Traceback" not in response.text and "/srv/path" not in response.text
        assert any("GET /broken failed" in r.getMessage() and r.exc_info for r in caplog.records)
        response = client.get("/busy")
        assert response.status_code == 503 and response.headers["retry-after"] == "11"
        assert response.json() == {"detail": "Service busy: 2 jobs are queued"}
        # validation errors stay 422s
        assert client.post("/tune", json={**SMALL, "task": "nope"}).status_code == 422
    assert app.docs_url is None and app.redoc_url is None  # routes.py serves the docs pages


# --- check_job against the defaults: every paper job fits; stored specs skip the limits --------------


@pytest.mark.parametrize("task", tasks.TASK_NAMES)
def test_every_paper_job_fits_the_default_limits(task):
    limits = Limits(max_cpus_per_trial=1, max_gpus_per_trial=0)
    baselines = [name for name in lodo.OPTIMIZERS if name != "lodo"]
    for source in schedules.SOURCES:
        try:
            schedules.schedule_for(task, source)
        except ValueError:
            continue
        job = TuneRequest.model_validate(
            {"task": task, "optimizer": "lodo", "schedule": source, "baselines": baselines},
            context=STORED_SPEC,
        )
        check_job(job, limits)
    check_job(
        EvaluateRequest.model_validate({"task": task, "optimizers": ["sgd"], "tuned": "defaults"}), limits
    )


def test_check_job_counts_trial_steps_exactly():
    job = TuneRequest.model_validate(SMALL, context=STORED_SPEC)  # rosenbrock: 200 steps × 0.2 = 40
    exact = 2 * 4 * 41 + 8 * 1 * 40  # GA generations × population × (steps + 1), then 8 seeds × 1 × 40
    check_job(job, Limits(max_trial_steps=exact))
    with pytest.raises(ValueError, match=rf"Invalid job size: {exact} trial steps = tuning 2 generations"):
        check_job(job, Limits(max_trial_steps=exact - 1))
    with pytest.raises(ValueError, match="LODOTUNE_MAX_POPULATION"):
        check_job(job, Limits(max_population=2))
    # studies: each tunes, and evaluates its tuned set; the baselines run once
    studies = TuneRequest.model_validate(
        {**SMALL, "studies": 3, "baselines": ["momentum"]}, context=STORED_SPEC
    )
    exact = 3 * 2 * 4 * 41 + 8 * (3 + 1) * 40
    check_job(studies, Limits(max_trial_steps=exact))
    with pytest.raises(ValueError, match=r"evaluation 8 seeds × \(3 studies \+ 1 baselines\) × 40 steps"):
        check_job(studies, Limits(max_trial_steps=exact - 1))
    # a stored spec is read back whatever the limits are now: they held when it was accepted
    TuneRequest.model_validate({**SMALL, "task_options": {}, "num_cpus_per_trial": 0}, context=STORED_SPEC)
    with pytest.raises(ValueError, match="num_cpus_per_trial"):
        TuneRequest.model_validate({**SMALL, "num_cpus_per_trial": 0})


BAD_FILTERS = ["task=rosen%00brock", "optimizer=%00", "task=" + "a" * 65, "task=%E2%80%AE", "kind=x%00"]


def test_bad_list_filters_are_422s_on_both_stores(serve, database_url):
    server = serve(launcher="queue", database_url=database_url)
    with server.client() as client:
        for query in BAD_FILTERS:  # a NUL reached PostgreSQL and came back a 500
            response = client.get(f"/jobs?{query}")
            assert response.status_code == 422, (query, response.text)
            assert response.json()["detail"][0]["loc"][0] == "query", query
        assert client.get("/jobs?task=rosenbrock&optimizer=adam,lodo").status_code == 200


def test_an_asha_jobs_size_counts_its_budget_in_evaluations_and_every_search():
    from api.limits import Limits, _asha_cost
    from tuner.specs import TuneJob

    limits = Limits()

    def cost(**options):
        job = TuneJob(task="digits-mlp", optimizer="adamqlr", strategy="asha", seeds=2, **options)
        return _asha_cost(job, limits)

    (tuning, _), (final, _) = cost(strategy_options={"num_samples": 10, "budget": "examples", "max_t": 5000})
    # the smallest batch ASHA may draw (50): 100 updates, two evaluations each
    assert (tuning, final) == (10 * 200, 2 * 200)
    (tuning, _), (final, _) = cost(
        baselines=["adam"], strategy_options={"num_samples": 10, "budget": "updates", "max_t": 100}
    )
    assert (tuning, final) == (2 * 10 * 200, 2 * 2 * 200)  # the baseline's search counts too
    (tuning, _), _ = cost(
        strategy_options={"num_samples": 10, "budget": "examples", "max_t": 5000},
        task_options={"batch_size": 500},
    )
    assert tuning == 10 * 2 * 10


def test_the_clarke_experiments_of_a_reproduce_job_count_as_the_jobs_they_run():
    """onepass-uci-energy (the diabetes stand-in here): one tuning episode and 16 initialisations ×
    2 methods of 1,000 steps; adamqlr-uci-energy: 4 searches × 8 samples at the longest trial
    (33,800 examples at batch 50: 676 updates, 2 evaluations each), the 4 optimizers' final runs
    at that length × 8 seeds, and 8 untuned runs of 100 full-batch updates (200 evaluations)."""
    onepass = ReproduceRequest.model_validate({"experiments": ["onepass-uci-energy"]})
    exact = 1000 + 2 * 16 * 1000
    check_job(onepass, Limits(max_trial_steps=exact))
    with pytest.raises(ValueError, match=rf"Invalid experiments: {exact} trial steps = onepass-uci-energy"):
        check_job(onepass, Limits(max_trial_steps=exact - 1))
    asha = ReproduceRequest.model_validate({"experiments": ["adamqlr-uci-energy"]})
    longest = 2 * 676
    exact = 4 * 8 * longest + 8 * 4 * longest + 8 * 200
    check_job(asha, Limits(max_trial_steps=exact))
    with pytest.raises(ValueError, match=rf"Invalid experiments: {exact} trial steps"):
        check_job(asha, Limits(max_trial_steps=exact - 1))


def test_long_name_lists_are_stored_counted_on_both_stores(serve, database_url):
    """Every experiment of a reproduce job, or many optimizers of an evaluation, join to more
    than the store's 64-character task and optimizer columns (a 500 on PostgreSQL): the listing
    counts them, the spec keeps every name."""
    server = serve(launcher="queue", database_url=database_url)
    optimizers = [
        "adam",
        "momentum",
        "rmsprop",
        "yogi",
        "sgd",
        "lars",
        "lodo",
        "lodo-diagonal",
        "lodo-global",
    ]
    with server.client() as client:
        reproduce = client.post("/reproduce", json={})
        evaluate = client.post(
            "/evaluate", json={"task": "rosenbrock", "optimizers": optimizers, "tuned": "defaults"}
        )
        assert (reproduce.status_code, evaluate.status_code) == (202, 202), (reproduce.text, evaluate.text)
        jobs = {job["kind"]: job for job in client.get("/jobs").json()["jobs"]}
        assert jobs["reproduce"]["task"] == f"{len(EXPERIMENTS)} experiments"
        assert jobs["evaluate"]["optimizer"] == f"{len(optimizers)} optimizers"
        assert client.get(reproduce.headers["location"]).json()["spec"]["experiments"] == list(EXPERIMENTS)
        short = client.post("/reproduce", json={"experiments": ["rosenbrock", "bowl"]})
        assert client.get(short.headers["location"]).json()["task"] == "rosenbrock,bowl"
