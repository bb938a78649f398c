"""GET /jobs against a real server (queue launcher: jobs are stored, none runs): a page of job
summaries whose fields are those of GET /jobs/{id}, with paging and filters."""

from __future__ import annotations

import time

from api.schemas import JobSummary

SUMMARY_FIELDS = set(JobSummary.model_fields)
JOBS = [
    {"task": "rosenbrock", "optimizer": "adam", "generations": 2, "population": 4},
    {"task": "noisy-quadratic-bowl", "optimizer": "adam", "generations": 2, "population": 4},
    {"task": "rosenbrock", "optimizer": "momentum", "generations": 2, "population": 4},
    {"task": "noisy-quadratic-bowl", "optimizer": "momentum", "generations": 2, "population": 4},
    {"task": "rosenbrock", "optimizer": "adam", "generations": 3, "population": 4},
]


def _ids(page: dict) -> list[str]:
    return [j["id"] for j in page["jobs"]]


def test_list_summaries_paging_and_filters(serve):
    server = serve(launcher="queue")
    with server.client() as client:
        made = []
        for body in JOBS:
            response = client.post("/tune", json=body)
            assert response.status_code == 202, response.text
            made.append(response.json()["id"])
        newest_first = made[::-1]
        # one job cancelled (the queue launcher settles a queued job's cancel request)
        assert client.post(f"/jobs/{made[2]}/cancel").status_code == 200
        deadline = time.monotonic() + 30
        while client.get(f"/jobs/{made[2]}").json()["status"] != "cancelled":
            assert time.monotonic() < deadline, "the cancel request was never settled"
            time.sleep(0.1)

        page = client.get("/jobs").json()
        assert set(page) == {"jobs", "next_cursor"} and page["next_cursor"] is None
        assert _ids(page) == newest_first
        for item in page["jobs"]:
            assert set(item) == SUMMARY_FIELDS
            assert item["links"] == {"self": f"/jobs/{item['id']}"}
            whole = client.get(item["links"]["self"]).json()
            assert {"spec", "attempts", "launcher", "driver", "cancel_requested"} <= set(whole)
            assert {name: whole[name] for name in SUMMARY_FIELDS - {"links"}} == {
                name: item[name] for name in SUMMARY_FIELDS - {"links"}
            }
            assert whole["links"]["self"] == item["links"]["self"]

        # paging: a cursor continues below the last job of the page, the last page has none
        seen, cursor = [], None
        while True:
            params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
            page = client.get("/jobs", params=params).json()
            assert len(page["jobs"]) <= 2
            seen += _ids(page)
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == newest_first

        # filters, alone and together (and with paging)
        def listed(**params) -> list[str]:
            response = client.get("/jobs", params=params)
            assert response.status_code == 200, response.text
            return _ids(response.json())

        assert listed(task="rosenbrock") == [made[4], made[2], made[0]]
        assert listed(optimizer="momentum") == [made[3], made[2]]
        assert listed(task="noisy-quadratic-bowl", optimizer="adam") == [made[1]]
        assert listed(status="cancelled") == [made[2]]
        assert listed(status="queued", task="rosenbrock") == [made[4], made[0]]
        assert listed(kind="evaluate") == []
        first = client.get("/jobs", params={"task": "rosenbrock", "limit": 1}).json()
        assert _ids(first) == [made[4]]
        rest = listed(task="rosenbrock", cursor=first["next_cursor"])
        assert rest == [made[2], made[0]]

        assert client.get("/jobs", params={"status": "bogus"}).status_code == 422
        assert client.get("/jobs", params={"cursor": "x"}).status_code == 422


def test_list_is_documented_as_summaries(serve):
    server = serve(launcher="queue")
    with server.client() as client:
        document = client.get("/openapi.json").json()
    schemas = document["components"]["schemas"]
    assert schemas["JobPage"]["properties"]["jobs"]["items"] == {"$ref": "#/components/schemas/JobSummary"}
    assert set(schemas["JobSummary"]["properties"]) == SUMMARY_FIELDS
    job = document["paths"]["/jobs/{job_id}"]["get"]["responses"]["200"]["content"]["application/json"]
    assert job["schema"] == {"$ref": "#/components/schemas/Job"}
