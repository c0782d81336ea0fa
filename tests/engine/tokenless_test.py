"""Token-less generation-1 workers: PyWorker G1 sends no "mtoken".  A workergroup with
launch.tokenless_reports "url_secret" gives its instances a REPORT_ADDR whose user info is the
worker's token; G1's HTTP client (python requests) sends URL user info as Basic authentication,
and the engine accepts the report on it.  Off by default: then such a report is refused (403).
The report below is built from G1's documented 12 fields; no Vast code runs here."""
import base64
import json
import os
import stat
import sys
import tempfile
import unittest
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import enginelib as el  # noqa: E402


def g1_report(wid, max_perf=50.0, loadtime=2.5):
    return {"id": wid, "loadtime": loadtime, "cur_load": 0.0, "error_msg": "", "max_perf": max_perf,
            "cur_perf": 0.0, "cur_capacity": 0, "max_capacity": 0, "num_requests_working": 0,
            "num_requests_recieved": 0, "additional_disk_usage": 0.0,
            "url": "http://127.0.0.1:%d" % (31000 + wid)}


def basic_from_url(url):
    """What requests does with URL user info: an Authorization: Basic header."""
    u = urllib.parse.urlsplit(url)
    if u.username is None:
        return {}
    cred = "%s:%s" % (urllib.parse.unquote(u.username), urllib.parse.unquote(u.password or ""))
    return {"Authorization": "Basic " + base64.b64encode(cred.encode()).decode()}


def post_path(url):
    """G1 joins "/worker_status/" onto REPORT_ADDR (urljoin keeps the user info)."""
    return urllib.parse.urljoin(url, "/worker_status/")


class Tokenless(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.eng = el.Engine()
        cls.tmp = tempfile.TemporaryDirectory(prefix="sgpu-g1-")

    @classmethod
    def tearDownClass(cls):
        cls.eng.close()
        cls.tmp.cleanup()

    def group(self, name, tokenless):
        rec = os.path.join(self.tmp.name, name + ".env")
        launch = {"create": 'echo "$CONTAINER_ID $REPORT_ADDR $SGPU_REPORT_ADDR $MASTER_TOKEN" >> %s; '
                            'echo inst-$CONTAINER_ID' % rec,
                  "destroy": "true"}
        if tokenless is not None:
            launch["tokenless_reports"] = tokenless
        self.eng.create_endpoint(name, cold_workers=1, max_workers=1)
        self.eng.create_group(name, "command", launch)

        def created():
            try:
                with open(rec) as f:
                    ln = f.readline().split()
                return ln if len(ln) == 4 else None
            except OSError:
                return None
        ln = el.wait_for(created, 60, what="instance created")
        self.token = ln[3]
        return int(ln[0]), ln[1], ln[2]

    def report(self, addr, body, headers):
        u = urllib.parse.urlsplit(post_path(addr))
        h = {"Content-Type": "application/json"}
        h.update(headers)
        st, data, _ = self.eng.raw("POST", u.path, json.dumps(body), h)
        return st, json.loads(data)

    def test_url_secret_admits_g1_reports(self):
        wid, addr, saddr = self.group("g1-on", "url_secret")
        u = urllib.parse.urlsplit(addr)
        self.assertEqual((u.hostname, u.port), (self.eng.host, self.eng.port))
        self.assertEqual(u.username, "sgpu")
        self.assertTrue(u.password)
        self.assertEqual(saddr, addr)
        st, r = self.report(addr, g1_report(wid), {})  # no token at all
        self.assertEqual(st, 403, r)
        bad = dict(basic_from_url(addr.replace(u.password, "0" * len(u.password))))
        st, r = self.report(addr, g1_report(wid), bad)
        self.assertEqual(st, 403, r)
        st, r = self.report(addr, g1_report(wid), {"Authorization": "Basic !!!"})
        self.assertEqual(st, 403, r)
        st, r = self.report(addr, g1_report(wid), basic_from_url(addr))
        self.assertEqual(st, 200, r)
        w = el.wait_for(lambda: [w for w in self.eng.workers("g1-on") if w["status"] == "idle"],
                        30, what="the G1 worker ready")[0]
        self.assertEqual(w["measured_perf"], 50.0)
        st, r = self.eng.route("g1-on", cost=10)
        self.assertEqual(st, 200, r)
        self.assertEqual(r["url"], "http://127.0.0.1:%d" % (31000 + wid))

    def test_off_by_default(self):
        wid, addr, _ = self.group("g1-off", None)
        self.assertIsNone(urllib.parse.urlsplit(addr).username)  # no secret in the address
        st, r = self.report(addr, g1_report(wid), {})
        self.assertEqual(st, 403, r)
        self.assertIn("tokenless_reports", r["msg"])
        # even the right token in a Basic header is not taken without the setting
        cred = base64.b64encode(("sgpu:" + self.token).encode()).decode()
        st, r = self.report(addr, g1_report(wid), {"Authorization": "Basic " + cred})
        self.assertEqual(st, 403, r)
        st, r = self.eng.call("GET", "/api/v0/workers/?endpoint=g1-off")
        self.assertEqual(st, 200)
        self.assertEqual([w["status"] for w in r["results"] if w["id"] == wid], ["loading"])

    def test_setting_validated(self):
        self.eng.create_endpoint("g1-val", cold_workers=0, max_workers=0)
        for bad in ("yes", 1, ["url_secret"]):
            st, r = self.eng.call("POST", "/api/v0/workergroups/", {
                "endpoint_name": "g1-val", "provider": "command",
                "launch": {"create": "true", "destroy": "true", "tokenless_reports": bad}})
            self.assertEqual(st, 400, (bad, r))
            self.assertIn("tokenless_reports", r["msg"])

    def test_local_provider_report_addr(self):
        rec = os.path.join(self.tmp.name, "local.env")
        sh = os.path.join(self.tmp.name, "g1.sh")
        with open(sh, "w") as f:
            f.write('#!/bin/sh\necho "$CONTAINER_ID $REPORT_ADDR" >> "%s"\nexec sleep 600\n' % rec)
        os.chmod(sh, stat.S_IRWXU)
        self.eng.create_endpoint("g1-local", cold_workers=1, max_workers=1)
        self.eng.create_group("g1-local", "local", {"launch_bin": sh, "tokenless_reports": "url_secret"})

        def line():
            try:
                with open(rec) as f:
                    return f.readline().split()
            except OSError:
                return None
        wid, addr = el.wait_for(line, 60, what="local instance")
        self.assertEqual(urllib.parse.urlsplit(addr).username, "sgpu")
        st, r = self.report(addr, g1_report(int(wid)), basic_from_url(addr))
        self.assertEqual(st, 200, r)


if __name__ == "__main__":
    unittest.main()
