"""The local provider gives every instance its own worker and model ports: instances created in
the same tick never share a number (each port stays reserved until its instance is gone), ports
come from --local-ports when it is set, and a create that cannot get a port fails with the reason
in the log and the workergroup's last_error (not a bare "could not start the operation")."""
import os
import random
import socket
import stat
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import enginelib as el  # noqa: E402

N_PORTS = 8  # room for 4 instances; the endpoint wants 5


def free_range(n):
    """n consecutive ports that bind now, below the usual ephemeral range."""
    for _ in range(200):
        lo = random.randrange(20000, 30000)
        ok = True
        for p in range(lo, lo + n):
            s = socket.socket()
            try:
                s.bind(("0.0.0.0", p))
            except OSError:
                ok = False
            finally:
                s.close()
            if not ok:
                break
        if ok:
            return lo
    raise unittest.SkipTest("no free port range")


class LocalPorts(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory(prefix="sgpu-ports-")
        self.rec = os.path.join(self.tmp.name, "ports.txt")
        self.launcher = os.path.join(self.tmp.name, "launcher.sh")
        with open(self.launcher, "w") as f:
            # argv: --workspace DIR --model-port N ...; record, then stay up (never reports)
            f.write('#!/bin/sh\necho "$CONTAINER_ID $WORKER_PORT $4" >> "$REC"\nexec sleep 600\n')
        os.chmod(self.launcher, stat.S_IRWXU)
        self.lo = free_range(N_PORTS)
        self.eng = el.Engine("--local-ports", "%d-%d" % (self.lo, self.lo + N_PORTS - 1),
                             "--error-backoff-s", "600")

    def tearDown(self):
        self.eng.close()
        self.tmp.cleanup()

    def records(self):
        try:
            with open(self.rec) as f:
                return [ln.split() for ln in f if ln.strip()]
        except OSError:
            return []

    def test_distinct_ports_in_range_and_why_a_create_failed(self):
        e = self.eng
        e.create_endpoint("ports", cold_workers=5, max_workers=5)
        gid = e.create_group("ports", "local", {"launch_bin": self.launcher,
                                                "env": {"REC": self.rec}})
        recs = el.wait_for(lambda: len(self.records()) >= 4 and self.records(), 60,
                           what="four instances started")
        ports = [int(p) for r in recs for p in r[1:]]
        self.assertEqual(len(ports), 8, recs)
        self.assertEqual(len(set(ports)), 8, recs)  # no two instances share a port
        for p in ports:
            self.assertTrue(self.lo <= p < self.lo + N_PORTS, (p, self.lo))

        def failed():
            st, r = e.call("GET", "/api/v0/workergroups/%d/" % gid)
            return "no free port" in r["result"]["last_error"] and r["result"]
        g = el.wait_for(failed, 60, what="the fifth create to fail with its reason")
        self.assertIn("--local-ports", g["last_error"])
        log = e.logtext()
        self.assertIn("provider_op_failed", log)
        self.assertIn("no free port in --local-ports", log)

        # an instance that is gone gives its ports back: the next create gets them
        victim = recs[0]
        w = [w for w in e.workers("ports") if str(w["id"]) == victim[0]][0]
        pid = int(w["instance"].split(":")[1])
        os.killpg(pid, 9)
        el.wait_for(lambda: any(ev["kind"] == "backoff" and "instance exited" in ev["reason"]
                                for ev in e.events("ports")), 60, what="the exit noticed")
        st, r = e.call("POST", "/api/v0/workergroups/%d/retry/" % gid, {})
        self.assertEqual(st, 200, r)
        new = el.wait_for(lambda: self.records()[4:], 60, what="a create after the release")
        self.assertEqual(sorted(int(p) for p in new[0][1:]), sorted(int(p) for p in victim[1:]))

    def test_bad_range_is_a_startup_error(self):
        import subprocess
        for bad in ("5", "10-5", "0-10", "1-70000", "a-b", "100-100"):
            p = subprocess.run([el.binpath("sgpu-engine"), "--local-ports", bad, "--data-dir",
                                self.tmp.name + "/x"], capture_output=True, timeout=30)
            self.assertNotEqual(p.returncode, 0, bad)
            self.assertIn(b"--local-ports", p.stderr, bad)


if __name__ == "__main__":
    unittest.main()
