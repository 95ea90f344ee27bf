"""The `taskHistory` extension task (Cantata Studio's server-side history): the store operations
on every backend, then the task through the in-process app: pages newest first, one key's tasks
only, delete with its files, and the validation errors with their exact codes."""

from __future__ import annotations

import pytest

from cantata.api.auth import add_key
from cantata.jobs.store_contract import SUCCESS
from pgserver import postgres_server, postgres_url  # noqa: F401  (fixtures)
from serverkit import XL_SFT, app_client, config, new_uuid, path_of, post, server_checkpoints, task
from test_store_conformance import add, backend, new_result, store  # noqa: F401  (fixtures)


# -- the store: one key's tasks newest first, and forgetting one ------------------------------------

def test_tasks_of_key_pages_newest_first_and_only_that_key(store):
    alice = [add(store, key="alice") for _ in range(5)]
    add(store, key="bob")
    first = store.tasks_of_key("alice", before_seq=None, limit=2)
    assert [r.uuid for r in first] == [alice[4], alice[3]]
    rest = store.tasks_of_key("alice", before_seq=first[-1].seq, limit=10)
    assert [r.uuid for r in rest] == [alice[2], alice[1], alice[0]]
    assert store.tasks_of_key("carol", before_seq=None, limit=10) == []


def test_delete_task_takes_its_results_but_leaves_the_media_rows(store):
    done = add(store)
    results = [new_result(0)]
    store.finish(done, SUCCESS, now=2.0, expires_at=100.0, results=results, owner="alice")
    assert store.delete_task(done) is True
    assert store.get_task(done) is None and store.results(done) == []
    assert store.get_media(results[0].audio_uuid) is not None  # the engine deletes the files
    assert store.delete_task(done) is False


# -- the task over HTTP -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    path = tmp_path_factory.mktemp("keys") / "api-keys"
    return {"path": path, "alice": add_key(path, "alice"), "bob": add_key(path, "bob")}


@pytest.fixture(scope="module")
def server(tmp_path_factory, keys):
    root = server_checkpoints(tmp_path_factory, ("xl-sft",))
    cfg = config(tmp_path_factory.mktemp("history"), root, no_auth=False, api_keys_file=keys["path"],
                 models=("xl-sft",))
    with app_client(cfg) as client:
        yield client


def as_key(keys, name: str) -> dict:
    return {"Authorization": f"Bearer {keys[name]}"}


def history(client, headers, **fields):
    return post(client, [{"taskType": "taskHistory", "taskUUID": new_uuid(), **fields}], headers=headers)


def only_error(response, status: int, code: str, parameter: str | None) -> dict:
    assert response.status_code == status, response.text
    (error,) = response.json()["errors"]
    assert (error["code"], error.get("parameter"), error["taskType"]) == (code, parameter, "taskHistory"), error
    return error


def test_history_lists_a_keys_tasks_newest_first_page_by_page(server, keys):
    alice = as_key(keys, "alice")
    sent = [task(seed=s, outputFormat="WAV") for s in (11, 12, 13)]
    for t in sent:
        assert post(server, [t], headers=alice).status_code == 200
    bob_task = task(seed=99)
    assert post(server, [bob_task], headers=as_key(keys, "bob")).status_code == 200

    page = history(server, alice, limit=2).json()["data"][0]
    assert [i["taskUUID"] for i in page["items"]] == [sent[2]["taskUUID"], sent[1]["taskUUID"]]
    newest = page["items"][0]
    assert newest["status"] == "success" and newest["request"]["seed"] == 13
    (result,) = newest["results"]
    assert result["seed"] == 13 and server.get(path_of(result["audioURL"])).status_code == 200
    assert page["nextCursor"] is not None

    rest = history(server, alice, limit=2, cursor=page["nextCursor"]).json()["data"][0]
    assert [i["taskUUID"] for i in rest["items"]][:1] == [sent[0]["taskUUID"]]
    everything = history(server, alice, limit=100).json()["data"][0]
    assert bob_task["taskUUID"] not in {i["taskUUID"] for i in everything["items"]}
    assert everything["nextCursor"] is None


def test_delete_forgets_the_task_and_its_files(server, keys):
    alice, bob = as_key(keys, "alice"), as_key(keys, "bob")
    sent = task(seed=21)
    audio_url = post(server, [sent], headers=alice).json()["data"][0]["audioURL"]
    only_error(history(server, bob, operation="delete", target=sent["taskUUID"]), 404, "taskNotFound", "target")

    reply = history(server, alice, operation="delete", target=sent["taskUUID"])
    assert reply.status_code == 200, reply.text
    assert reply.json()["data"][0] == {"taskType": "taskHistory", "taskUUID": reply.json()["data"][0]["taskUUID"],
                                       "operation": "delete", "target": sent["taskUUID"]}
    listed = history(server, alice, limit=100).json()["data"][0]["items"]
    assert sent["taskUUID"] not in {i["taskUUID"] for i in listed}
    assert server.get(path_of(audio_url)).status_code == 404
    gone = post(server, [{"taskType": "getResponse", "taskUUID": sent["taskUUID"]}], headers=alice)
    assert gone.json()["errors"][0]["code"] == "taskNotFound"
    only_error(history(server, alice, operation="delete", target=sent["taskUUID"]), 404, "taskNotFound", "target")


def test_a_task_still_queued_or_running_cannot_be_deleted(server, keys):
    alice = as_key(keys, "alice")
    slow = task(duration=300, steps=300, deliveryMethod="async")
    assert post(server, [slow], headers=alice).status_code == 200
    only_error(history(server, alice, operation="delete", target=slow["taskUUID"]), 400,
               "conflictTaskNotFinished", "target")
    post(server, [{"taskType": "cancel", "taskUUID": slow["taskUUID"]}], headers=alice)
    assert history(server, alice, operation="delete", target=slow["taskUUID"]).status_code == 200


@pytest.mark.parametrize("fields,status,code,parameter", [
    ({"operation": "purge"}, 400, "invalidTaskHistory", "operation"),
    ({"limit": 0}, 400, "invalidTaskHistory", "limit"),
    ({"limit": 101}, 400, "invalidTaskHistory", "limit"),
    ({"limit": "5"}, 400, "invalidTaskHistory", "limit"),
    ({"limit": True}, 400, "invalidTaskHistory", "limit"),
    ({"cursor": "abc"}, 400, "invalidTaskHistory", "cursor"),
    ({"cursor": 5}, 400, "invalidTaskHistory", "cursor"),
    ({"cursor": ""}, 400, "invalidTaskHistory", "cursor"),
    ({"target": new_uuid()}, 400, "unsupportedParameter", "target"),
    ({"operation": "delete"}, 400, "invalidTaskHistory", "target"),
    ({"operation": "delete", "target": 7}, 400, "invalidTaskHistory", "target"),
    ({"operation": "delete", "target": new_uuid(), "limit": 3}, 400, "unsupportedParameter", "limit"),
    ({"operation": "delete", "target": new_uuid()}, 404, "taskNotFound", "target"),
])
def test_bad_fields_get_their_codes(server, keys, fields, status, code, parameter):
    only_error(history(server, as_key(keys, "alice"), **fields), status, code, parameter)


def test_task_uuid_is_required_like_every_task(server, keys):
    reply = post(server, [{"taskType": "taskHistory"}], headers=as_key(keys, "alice"))
    assert reply.json()["errors"][0]["code"] == "missingTaskUUID"


def test_history_is_listed_in_the_openapi_document(server):
    document = server.get("/openapi.json").json()
    schema = document["components"]["schemas"]["TaskHistoryTask"]
    assert schema["properties"]["operation"]["enum"] == ["list", "delete"]
    assert schema["properties"]["limit"]["maximum"] == 100
