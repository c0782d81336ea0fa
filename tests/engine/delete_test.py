"""Deleting an endpoint or its workergroup destroys the workers it had, through the provider.

Found by running Vast's SDK against sgpu-engine (docs/engine.md, "Clients written for Vast"):
`ManagedEndpoint.delete()` / `delete_workergroup` answered success, the endpoint stayed listed as
"deleting" and its ready workers kept running for ever, because a worker is destroyed by the
scaler step that needs a live workergroup, and the endpoint's only workergroup was being deleted
too.  Fake workers behind the `command` provider report like real ones; the test waits for the
provider's `destroy` and for the rows to go, and asserts no worker was destroyed with work in
flight."""
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import enginelib as el  # noqa: E402


class Delete(unittest.TestCase):
    def setUp(self):
        if not os.access(el.binpath("sgpu-engine"), os.X_OK):
            raise unittest.SkipTest("sgpu-engine not built")
        self.eng = el.Engine("--drain-grace-s", "0.2")
        self.fleet = el.Fleet(self.eng, perf=100.0, load_s=0.1, park=False)

    def tearDown(self):
        self.fleet.close()
        self.eng.close()

    def ready_endpoint(self, name):
        eid = self.eng.create_endpoint(name, cold_workers=1, max_workers=1, min_load=1)
        gid = self.eng.create_group(name, "command", self.fleet.launch)
        el.wait_for(lambda: [w for w in self.eng.workers(name) if w["status"] == "idle"],
                    what="a ready worker")
        wid = self.eng.workers(name)[0]["id"]
        return eid, gid, wid

    def destroyed(self, wid):
        return any(a[1] == "destroy" and a[2] == wid for a in self.fleet.actions)

    def test_delete_endpoint_destroys_its_ready_worker(self):
        eid, _, wid = self.ready_endpoint("del-ep")
        st, r = self.eng.call("DELETE", "/api/v0/endptjobs/%d/" % eid)
        self.assertEqual(st, 200, r)
        el.wait_for(lambda: self.destroyed(wid), what="destroy of worker %d" % wid)
        el.wait_for(lambda: not [x for x in self.eng.call("GET", "/api/v0/endptjobs/")[1]["results"]
                                 if x["id"] == eid], what="endpoint row gone")
        st, r = self.eng.call("GET", "/api/v0/workergroups/")
        self.assertEqual(r["results"], [])
        self.assertEqual(self.eng.workers(), [])
        self.assertEqual(self.fleet.violations, [])
        # the name is free again and the new endpoint is the only one of that name
        self.eng.create_endpoint("del-ep", cold_workers=0, max_workers=0)
        rows = [x for x in self.eng.call("GET", "/api/v0/endptjobs/")[1]["results"]
                if x["endpoint_name"] == "del-ep"]
        self.assertEqual(len(rows), 1, rows)

    def test_delete_workergroup_destroys_its_ready_worker(self):
        eid, gid, wid = self.ready_endpoint("del-wg")
        st, r = self.eng.call("DELETE", "/api/v0/workergroups/%d/" % gid)
        self.assertEqual(st, 200, r)
        el.wait_for(lambda: self.destroyed(wid), what="destroy of worker %d" % wid)
        el.wait_for(lambda: self.eng.workers("del-wg") == [], what="worker row gone")
        el.wait_for(lambda: self.eng.call("GET", "/api/v0/workergroups/")[1]["results"] == [],
                    what="workergroup row gone")
        # the endpoint stays, with nothing to create its workers
        rows = [x for x in self.eng.call("GET", "/api/v0/endptjobs/")[1]["results"]
                if x["id"] == eid]
        self.assertEqual(rows[0]["endpoint_state"], "active")
        self.assertEqual(self.fleet.violations, [])


if __name__ == "__main__":
    unittest.main()
