"""Schemathesis over the service's own /openapi.json against a real uvicorn, on SQLite and on
PostgreSQL: whatever the generated requests hold (valid and invalid bodies, paths, queries), the
answer is never a 5xx."""

from __future__ import annotations

import dataclasses
import json
import uuid

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from sqlalchemy import text

import lodo
import tasks
from tests.api.conftest import POSTGRES_ADMIN_URL, Server
from tuner.strategies import STRATEGIES
from tuner.strategies.asha import AshaConfig
from tuner.strategies.onepass import OnePassConfig

TOKEN = "fuzz-token"


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory):
    # queue: jobs are stored, never run, so generated bodies cost nothing and no stream waits forever
    server = Server(tmp_path_factory.mktemp("fuzz") / "artifacts", launcher="queue", api_token=TOKEN)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def postgres_fuzz_server(tmp_path_factory, postgres_admin):
    """The same server on a fresh PostgreSQL database: its JSON columns refuse what SQLite takes."""
    name = f"lodotune_fuzz_{uuid.uuid4().hex[:12]}"
    with postgres_admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    server = Server(
        tmp_path_factory.mktemp("fuzz-pg") / "artifacts", launcher="queue", api_token=TOKEN, database_url=url
    )
    server.start()
    yield server
    server.stop()
    with postgres_admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def api_schema(request):
    server = request.getfixturevalue("fuzz_server" if request.param == "sqlite" else "postgres_fuzz_server")
    return schemathesis.openapi.from_url(f"{server.url}/openapi.json").exclude(path_regex=r"/events$")


def _operations(schema):
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 14  # every route is in the schema
    return operations


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_server_errors(api_schema, mode):
    for operation in _operations(api_schema):

        @given(case=operation.as_strategy(mode))
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case):
            case.call_and_validate(headers={"Authorization": f"Bearer {TOKEN}"}, checks=[not_a_server_error])

        try:
            check()
        except Unsatisfiable:
            # nothing to break in an operation without inputs (GET /tasks, /healthz, ...)
            assert mode is GenerationMode.NEGATIVE and not list(operation.iter_parameters()), operation.label


TUNABLE = [name for name in lodo.OPTIMIZERS if lodo.get(name).names]
NUMBERS = st.one_of(
    st.integers(-5, 5000), st.floats(allow_nan=True, allow_infinity=True), st.none(), st.text(max_size=3)
)
STRATEGY_OPTIONS = st.dictionaries(
    st.sampled_from(
        [
            *(f.name for f in dataclasses.fields(AshaConfig)),
            *(f.name for f in dataclasses.fields(OnePassConfig)),
            *(name for strategy in STRATEGIES.values() for name in strategy.Options.model_fields),
            "other",
        ]
    ),
    st.one_of(
        NUMBERS,
        st.booleans(),
        st.lists(st.sampled_from(["lr", "weight_decay", "momentum", "beta"]), max_size=3),
        st.dictionaries(st.sampled_from(["lr", "momentum", "batch_size", "beta"]), NUMBERS, max_size=2),
    ),
    max_size=3,
)


def _post_tune(server: Server, body: dict) -> None:
    response = httpx.post(
        f"{server.url}/tune",
        content=json.dumps(body),  # NaN and Infinity as Python writes them
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )
    assert response.status_code in (202, 422), (response.status_code, response.text, body)
    if response.status_code == 422:
        assert response.json()["detail"]


@given(
    body=st.fixed_dictionaries(
        {"task": st.sampled_from(tasks.TASK_NAMES), "strategy": st.sampled_from(["ga", "asha", "onepass"])},
        optional={
            "optimizer": st.sampled_from(TUNABLE),
            "population": NUMBERS,
            "generations": NUMBERS,
            "step_scale": NUMBERS,
            "seeds": NUMBERS,
            "schedule": st.sampled_from(["code", "paper", "x"]),
            "baselines": st.lists(st.sampled_from([*TUNABLE, "nope"]), max_size=3),
            "strategy_options": STRATEGY_OPTIONS,
        },
    )
)
@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), database=None)
def test_tune_bodies_with_real_names_are_accepted_or_named_422(fuzz_server, body):
    """Generated bodies mostly fail on the registry names; these reach the deeper checks."""
    _post_tune(fuzz_server, body)


@given(
    body=st.sampled_from(
        [
            {"task": "digits-mlp", "strategy": "asha", "optimizer": "adam"},
            {"task": "digits-mlp", "strategy": "onepass"},
        ]
    ),
    options=STRATEGY_OPTIONS,
)
@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), database=None)
def test_strategy_options_are_accepted_or_named_422(fuzz_server, body, options):
    """A valid asha / onepass body with generated options: the strategies' own checks see every type."""
    _post_tune(fuzz_server, {**body, "strategy_options": options})


def test_without_the_token_everything_but_healthz_is_401(api_schema):
    for operation in _operations(api_schema):

        @given(case=operation.as_strategy())
        @settings(max_examples=3, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case):
            response = case.call(headers={"Authorization": "Bearer wrong"})
            assert response.status_code == (200 if case.path == "/healthz" else 401), case.path

        check()
