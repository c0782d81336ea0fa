"""Injected start delays of the `local` provider (launch.create_delay_s, resume_delay_s,
model_load_delay_s; docs/engine.md "`local` launch spec"), on the real stack: sgpu-engine +
sgpu-launch + sgpu-worker + the stub model server.

The delays are checked in the engine's own event log, not with wall-clock sleeps in the test:
the `create` decision comes create_delay_s before the instance exists (state creating ->
loading), the worker becomes ready (-> idle) no sooner than model_load_delay_s after that (the
model server holds its loading state that long), and a parked worker that a request wakes
(`start`) is routable (starting -> idle) no sooner than resume_delay_s later.  Bad values are
refused with 400 and the field's name; a shutdown during a create delay spawns nothing."""
import os
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import enginelib as el  # noqa: E402

NEED = ["sgpu-engine", "sgpu-worker", "sgpu-launch", "fixtures/stub_model"]
CREATE_S, LOAD_S, RESUME_S = 3.0, 2.0, 2.0
EPS = 0.05  # event times are the engine's wall clock; the timers run on its monotonic one


def launch_spec(**delays):
    stub = el.binpath("fixtures/stub_model")
    spec = {
        "model_cmd": stub + " --port {model_port} --log \"$MODEL_LOG\"",
        "env": {"BACKEND": "tgi", "SGPU_BENCHMARK_RUNS": "1", "SGPU_REPORT_INTERVAL": "1",
                "SGPU_DRAIN_TIMEOUT": "2"},
        "args": ["--stop-timeout", "5"],
    }
    spec.update(delays)
    return spec


def first(evs, pred, what):
    for ev in evs:
        if pred(ev):
            return ev
    raise AssertionError("no event: %s in %s" % (what, [(e["kind"], e["reason"]) for e in evs]))


def state_to(ev, wid, to):
    return (ev["kind"] == "state" and ev.get("worker_id") == wid and
            ev["inputs"].get("to") == to)


class LocalDelays(unittest.TestCase):
    def setUp(self):
        for n in NEED:
            if not os.access(el.binpath(n), os.X_OK):
                raise unittest.SkipTest("missing " + n)
        self.eng = el.Engine("--drain-grace-s", "1", tick_ms=100)

    def tearDown(self):
        self.eng.close()

    def test_delays_are_applied_in_order(self):
        e = self.eng
        # one parked worker (the warm floor), no load: created, loaded, then stopped
        e.create_endpoint("dl", min_load=0, cold_workers=1, max_workers=1, target_util=1.0,
                          cold_mult=1, max_queue_time=30, target_queue_time=0,
                          inactivity_timeout=0)
        e.create_group("dl", "local", launch_spec(create_delay_s=CREATE_S,
                                                   model_load_delay_s=LOAD_S,
                                                   resume_delay_s=RESUME_S))
        w = el.wait_for(lambda: [x for x in e.workers("dl") if x["status"] == "stopped"],
                        timeout=120, what="the worker created, loaded and parked")[0]
        wid = w["id"]
        # a request wakes it: held (long poll / polls) until the resume delay has elapsed
        st, g = el.wait_for(lambda: (lambda r: r if "url" in r[1] else None)(
            e.route("dl", cost=1)), timeout=120, what="a grant from the resumed worker")
        self.assertEqual(st, 200, g)
        evs = e.events("dl")
        create = first(evs, lambda ev: ev["kind"] == "create" and ev.get("worker_id") == wid,
                       "create")
        loading = first(evs, lambda ev: state_to(ev, wid, "loading"), "-> loading")
        ready = first(evs, lambda ev: state_to(ev, wid, "idle"), "-> idle")
        start = first(evs, lambda ev: ev["kind"] == "start" and ev.get("worker_id") == wid,
                      "start")
        resumed = first(evs, lambda ev: state_to(ev, wid, "idle") and ev["ts"] >= start["ts"],
                        "-> idle after start")
        self.assertGreaterEqual(loading["ts"] - create["ts"], CREATE_S - EPS, (create, loading))
        self.assertGreaterEqual(ready["ts"] - loading["ts"], LOAD_S - EPS, (loading, ready))
        self.assertGreaterEqual(resumed["ts"] - start["ts"], RESUME_S - EPS, (start, resumed))
        self.assertEqual(resumed["reason"], "resumed")
        log = e.logtext()
        self.assertIn("local_delay ", log)
        self.assertIn("op=create delay_s=3.000", log)
        self.assertIn("op=start delay_s=2.000", log)

    def test_bad_values_are_refused(self):
        e = self.eng
        e.create_endpoint("bad", min_load=0, cold_workers=0, max_workers=1)
        for key in ("create_delay_s", "resume_delay_s", "model_load_delay_s"):
            for bad in (-1, 3601, 1e300, "5", True, None, [1]):
                st, r = e.call("POST", "/api/v0/workergroups/", {
                    "endpoint_name": "bad", "provider": "local", "launch": {key: bad}})
                self.assertEqual(st, 400, (key, bad, r))
                self.assertIn("launch.%s must be a number of seconds in [0, 3600]" % key,
                              r.get("msg", "") + r.get("error", "") + str(r), (key, bad))
        # the edges are accepted, and a PUT is checked the same way
        gid = e.create_group("bad", "local", {"create_delay_s": 0, "resume_delay_s": 3600,
                                              "model_load_delay_s": 2.5})
        st, r = e.call("PUT", "/api/v0/workergroups/%d/" % gid,
                       {"launch": {"create_delay_s": -0.5}})
        self.assertEqual(st, 400, r)
        self.assertIn("launch.create_delay_s", str(r))

    def test_shutdown_during_a_create_delay_spawns_nothing(self):
        e = self.eng
        e.create_endpoint("sd", min_load=1, cold_workers=0, max_workers=1, target_util=1.0,
                          cold_mult=1, inactivity_timeout=0)
        tmp = tempfile.TemporaryDirectory(prefix="sgpu-delays-")
        self.addCleanup(tmp.cleanup)
        marker = os.path.join(tmp.name, "spawned")
        launcher = os.path.join(tmp.name, "launcher.sh")
        with open(launcher, "w") as f:  # would record that an instance was spawned
            f.write("#!/bin/sh\ntouch %s\nexec sleep 600\n" % marker)
        os.chmod(launcher, 0o700)
        e.create_group("sd", "local", {"launch_bin": launcher, "create_delay_s": 600})
        el.wait_for(lambda: "op=create delay_s=600.000" in e.logtext(), timeout=60,
                    what="the create waiting on its delay")
        self.assertEqual([w["status"] for w in e.workers("sd")], ["creating"])
        e.stop()
        self.assertFalse(os.path.exists(marker))
        self.assertNotIn("local_instance_start", e.logtext())


if __name__ == "__main__":
    unittest.main()
