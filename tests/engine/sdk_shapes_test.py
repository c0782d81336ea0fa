"""sgpu-engine answers in the shapes Vast's serverless SDK and CLI parse (docs/engine.md,
"Clients written for Vast").  The checks below are written from the fields those clients
document — the Endpoint and Worker data classes, the management calls' answers — not from their
code, and Vast's code does not run here.  Requests are made the way those clients make them:
Bearer key plus api_key in the query, bodies with nulls for unset options, client_id "me"."""
import json
import os
import sys
import unittest
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import enginelib as el  # noqa: E402


def endpoint_data(d):
    """The SDK's EndpointData: these keys are read with [] (KeyError if missing)."""
    for k in ("id", "endpoint_name", "api_key", "user_id", "created_at"):
        if k not in d:
            raise KeyError(k)
    assert isinstance(d["id"], int) and isinstance(d["user_id"], int), d
    assert isinstance(d["created_at"], (int, float)), d
    # read with .get(): may be absent, but when present they have these types
    for k in ("cold_workers", "max_workers"):
        assert isinstance(d.get(k, 0), int), (k, d)
    for k in ("min_load", "min_cold_load", "target_util", "cold_mult", "max_queue_time",
              "target_queue_time", "inactivity_timeout"):
        assert isinstance(d.get(k, 0.0), (int, float)), (k, d)
    assert d.get("auto_delete_in_seconds") is None or isinstance(d["auto_delete_in_seconds"], float)
    assert isinstance(d.get("auto_delete_due_24h", False), bool)
    return d


def worker_data(d):
    """The SDK's Worker.from_dict: int(id), float()/int() of the load fields, a status string."""
    int(d.get("id"))
    assert isinstance(d.get("status") or "UNKNOWN", str)
    for k in ("cur_load", "new_load", "cur_load_rolling_avg", "cur_perf", "perf", "measured_perf",
              "dlperf", "reliability", "disk_usage", "loaded_at", "started_at"):
        float(d.get(k, 0.0))
    int(d.get("reqs_working", 0))
    return d


class SdkShapes(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.eng = el.Engine()

    @classmethod
    def tearDownClass(cls):
        cls.eng.close()

    def sdk(self, method, route, body=None, params=None):
        """Like the SDK's request helper: Bearer header and api_key in the query string."""
        q = dict(params or {}, api_key=self.eng.key)
        path = route + "?" + urllib.parse.urlencode(q)
        st, data, _ = self.eng.raw(method, path, body if method != "GET" else None,
                                   {"Authorization": "Bearer " + self.eng.key,
                                    "Content-Type": "application/json"})
        return st, (json.loads(data) if data else None)

    def test_endpoint_create_list_fetch_delete(self):
        st, r = self.sdk("POST", "/api/v0/endptjobs/",
                         {"endpoint_name": "sdk-a", "cold_workers": 0, "max_workers": 0})
        self.assertEqual(st, 200, r)
        eid = r["result"]  # create_endpoint reads json["result"]
        st, r = self.sdk("GET", "/api/v0/endptjobs/", params={"client_id": "me"})
        self.assertEqual(st, 200, r)
        rows = {e["endpoint_name"]: endpoint_data(e) for e in r.get("results", [])}
        self.assertIn("sdk-a", rows)
        self.assertEqual(rows["sdk-a"]["id"], eid)
        self.assertIs(r["success"], True)  # the CLI's show endpoints checks "success"
        st, r = self.sdk("GET", "/api/v0/endptjobs/%d/" % eid)  # fetch_endpoint: json["result"]
        self.assertEqual(st, 200, r)
        self.assertEqual(endpoint_data(r["result"])["endpoint_name"], "sdk-a")
        st, r = self.sdk("DELETE", "/api/v0/endptjobs/%d/" % eid)
        self.assertEqual(st, 200, r)

    def test_cli_bodies_with_nulls(self):
        """The CLI sends every option, unset ones as null, plus client_id/autoscaler_instance."""
        body = {"client_id": "me", "min_load": 0.0, "min_cold_load": 0.0, "target_util": 0.9,
                "cold_mult": 2.5, "cold_workers": 0, "max_workers": 0, "endpoint_name": "cli-a",
                "max_queue_time": None, "target_queue_time": None, "inactivity_timeout": None,
                "autoscaler_instance": "prod"}
        st, r = self.sdk("POST", "/api/v0/endptjobs/", body)
        self.assertEqual(st, 200, r)
        eid = r["result"]
        upd = dict(body, endptjob_id=eid, min_load=None, endpoint_state=None, target_util=0.8)
        st, r = self.sdk("PUT", "/api/v0/endptjobs/%d/" % eid, upd)
        self.assertEqual(st, 200, r)
        wg = {"client_id": "me", "min_load": None, "target_util": None, "cold_mult": None,
              "cold_workers": None, "test_workers": 3, "template_hash": "abc", "template_id": None,
              "search_params": "verified=True rentable=True rented=False", "launch_args": None,
              "gpu_ram": None, "endpoint_name": "cli-a", "endpoint_id": None,
              "autoscaler_instance": "prod"}
        st, r = self.sdk("POST", "/api/v0/autojobs/", wg)
        self.assertEqual(st, 200, r)
        st, r = self.sdk("GET", "/api/v0/autojobs/", params={"client_id": "me"})
        self.assertEqual(st, 200, r)
        self.assertIs(r["success"], True)
        self.assertTrue(any(g["endpoint_id"] == eid for g in r["results"]))

    def test_workergroup_create_find_update_delete(self):
        st, r = self.sdk("POST", "/api/v0/endptjobs/",
                         {"endpoint_name": "sdk-b", "cold_workers": 0, "max_workers": 0})
        eid = r["result"]
        # ManagedEndpoint.add_workergroup: WorkergroupConfig.to_dict(), endpoint_id set
        st, r = self.sdk("POST", "/api/v0/workergroups/",
                         {"search_params": "", "endpoint_id": eid, "template_hash": "h"})
        self.assertEqual(st, 200, r)
        wid = r["id"]  # create_workergroup reads json["id"]
        self.assertEqual(r["result"], wid)  # sgpu's own clients read "result"
        st, r = self.sdk("GET", "/api/v0/workergroups/")
        found = [g["id"] for g in r.get("results", []) if g.get("endpoint_id") == eid]
        self.assertEqual(found, [wid])  # find_workergroup_for_endpoint
        st, r = self.sdk("POST", "/update_workers/", {"workergroup_id": wid,
                                                      "api_key": self.eng.key})
        self.assertEqual(st, 200, r)
        self.assertIsInstance(r, dict)
        self.assertIs(r["success"], True)  # the CLI reads success, cancelled, workers_to_update
        self.assertEqual((r["cancelled"], r["workers_to_update"]), (False, 0))
        st, r = self.sdk("POST", "/update_workers/", {"workergroup_id": wid, "cancel_update": True,
                                                      "api_key": self.eng.key})
        self.assertEqual(st, 200, r)
        self.assertIs(r["success"], False)
        self.assertIn("cannot be cancelled", r["error_msg"])
        st, r = self.sdk("POST", "/update_workers/", {"workergroup_id": 99999})
        self.assertEqual(st, 404, r)
        st, r = self.sdk("POST", "/update_workers/", {"workergroup_id": "x"})
        self.assertEqual(st, 400, r)
        st, r = self.sdk("DELETE", "/api/v0/workergroups/%d/" % wid)
        self.assertEqual(st, 200, r)
        self.sdk("DELETE", "/api/v0/endptjobs/%d/" % eid)

    def test_workers_and_logs(self):
        e = self.eng
        fleet = el.Fleet(e, perf=100.0, load_s=0.1)
        try:
            eid = e.create_endpoint("sdk-c", cold_workers=1, max_workers=1)
            wg = e.create_group("sdk-c", "command", fleet.launch)
            el.wait_for(lambda: [w for w in e.workers("sdk-c") if w["measured_perf"] > 0], 60,
                        what="a ready worker")  # idle, or already parked (no load)
            # get_endpoint_workers: POST {"id", "api_key"} -> a list of worker rows
            st, r = self.sdk("POST", "/get_endpoint_workers/", {"id": eid, "api_key": e.key})
            self.assertEqual(st, 200, r)
            self.assertIsInstance(r, list)
            self.assertEqual(len(r), 1)
            worker_data(r[0])
            for route, ident in (("/get_endpoint_logs/", eid), ("/get_autogroup_logs/", wg)):
                st, r = self.sdk("POST", route, {"id": ident, "api_key": e.key, "tail": 100000})
                self.assertEqual(st, 200, (route, r))
                self.assertEqual(sorted(r), ["debug", "info0", "info1", "trace"])
                self.assertIn("workergroup_created", r["info0"] + r["info1"])
            st, r = self.sdk("POST", "/get_autogroup_logs/", {"id": 424242})
            self.assertEqual(st, 404, r)
            # a rolling update replaces the worker: the old one drains, a new one comes
            old = {w["id"] for w in e.workers("sdk-c")}
            st, r = self.sdk("POST", "/update_workers/", {"workergroup_id": wg})
            self.assertEqual((st, r["workers_to_update"]), (200, 1), r)
            # ready (it may be parked at once: the endpoint has no load)
            el.wait_for(lambda: [w for w in e.workers("sdk-c")
                                 if w["id"] not in old and w["measured_perf"] > 0], 60,
                        what="a replacement worker")
        finally:
            fleet.close()


if __name__ == "__main__":
    unittest.main()
