"""The enterprise directory (企业通信录) through the operations API: search by name, department
and any part of a number, as the console and the operator (remote attendant) look numbers up."""

from __future__ import annotations

from tests.mgmt.support import Api


def names(api: Api, query: str) -> list[str]:
    reply = api.get(f"/api/directory?{query}")
    assert reply.status == 200, reply.text
    return [entry["name"] for entry in reply.body["entries"]]


def test_directory_search_by_name_department_and_number(api: Api) -> None:
    assert names(api, "q=zhang") == ["张伟 Zhang Wei"]
    assert names(api, "q=%E7%8E%8B") == ["王芳 Wang Fang"]  # 王
    assert names(api, "q=Sales") == ["王芳 Wang Fang", "李强 Li Qiang", "赵磊 Zhao Lei"]
    assert names(api, "q=61002") == ["张伟 Zhang Wei"]  # a short number
    assert names(api, "q=%2B862162880008") == ["刘洋 Liu Yang"]  # E.164
    everyone = api.get("/api/directory?group=acme").body
    assert everyone["count"] == 7 and everyone["truncated"] is False
    (duty,) = api.get("/api/directory?q=13800138001").body["entries"]
    assert duty == {
        "group": "acme",
        "name": "陈静 Chen Jing",
        "department": "总经办 Management",
        "title": "Duty manager",
        "kind": "mobile",
        "short": "66001",
        "long": "13800138001",
        "e164": "+8613800138001",
    }
    assert api.get("/api/directory?q=6&limit=2").body["truncated"] is True


def test_directory_errors(api: Api) -> None:
    assert api.get("/api/directory?group=nope").status == 404
    assert api.get("/api/directory?limit=0").status == 422
    assert api.get("/api/directory", token=False).status == 401
