"""Writes from a web page on a foreign origin are refused, even bodiless ones that need no preflight."""
from __future__ import annotations

FOREIGN = "https://evil.example"
DASHBOARD = "http://localhost:5173"


def test_a_bodiless_cross_site_write_is_refused_and_changes_nothing(make_app, fake, hub):
    app = make_app()
    client = app.test_client()
    start = client.post("/api/generate/batch/start", json={"target_count": 500}, headers={"Origin": DASHBOARD})
    assert start.status_code == 200
    batch_id = start.get_json()["batch_id"]
    for path in ("/api/generate/batch/stop", "/api/huggingface/push"):
        refused = client.post(path, headers={"Origin": FOREIGN})
        assert refused.status_code == 403
        body = refused.get_json()
        assert body["success"] is False and FOREIGN in body["error"] and "CORS_ORIGINS" in body["error"]
    assert client.get(f"/api/generate/batch/status?batch_id={batch_id}").get_json()["running"] is True
    assert hub.files == {}
    deleted = client.delete("/api/sample/anything", headers={"Origin": FOREIGN})
    assert deleted.status_code == 403
    client.post("/api/generate/batch/stop", json={}, headers={"Origin": DASHBOARD})


def test_allowed_origins_same_origin_and_no_origin_may_write(make_app):
    client = make_app().test_client()
    for headers in ({"Origin": DASHBOARD}, {"Origin": "http://localhost"}, {}):
        stopped = client.post("/api/generate/batch/stop", json={}, headers=headers)
        assert stopped.status_code == 200, (headers, stopped.get_json())


def test_reads_from_any_origin_are_unaffected(make_app):
    client = make_app().test_client()
    assert client.get("/api/stats", headers={"Origin": FOREIGN}).status_code == 200
