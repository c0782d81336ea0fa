"""Engine SIGTERM with `command`-provider instances (docs/engine.md, Shutdown): they are left
running on purpose (an engine restart must not cold-start a rented fleet), each is logged as
`command_instance_left_running`, a provider command in flight is waited for so its result (the
instance handle) is stored, and the next start re-adopts the instances instead of creating new
ones."""
import os
import signal
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import enginelib as el  # noqa: E402


class CommandShutdown(unittest.TestCase):
    def setUp(self):
        if not os.access(el.binpath("sgpu-engine"), os.X_OK):
            raise unittest.SkipTest("sgpu-engine not built")
        self.eng = el.Engine("--unavailable-after-s", "600")
        self.dir = tempfile.mkdtemp(prefix="sgpu-cmdstop-")
        self.ctl = os.path.join(self.dir, "ctl")
        self.gate = os.path.join(self.dir, "gate")
        open(self.ctl, "w").close()

    def tearDown(self):
        self.eng.close()

    def lines(self):
        with open(self.ctl) as f:
            return [ln.split() for ln in f if ln.strip()]

    def test_sigterm_leaves_command_instances_and_restart_readopts(self):
        e = self.eng
        e.create_endpoint("cmd", min_load=1, min_workers=0, max_workers=1, target_util=1.0,
                          cold_mult=1, inactivity_timeout=-1)
        # create announces itself, then waits for the test's gate file: SIGTERM arrives while
        # the command is in flight
        e.create_group("cmd", "command", {
            "create": "echo create $SGPU_WORKER_ID >> {ctl}; "
                      "while [ ! -e {gate} ]; do sleep 0.05; done; "
                      "echo inst-$SGPU_WORKER_ID".format(ctl=self.ctl, gate=self.gate),
            "destroy": "echo destroy $SGPU_WORKER_ID >> %s" % self.ctl})
        el.wait_for(lambda: self.lines(), what="create started")
        wid = int(self.lines()[0][1])
        e.proc.send_signal(signal.SIGTERM)
        # the engine waits for the command in flight (its result must be stored) ...
        el.wait_for(lambda: "signal" in e.logtext(), what="shutdown began")
        self.assertIsNone(e.proc.poll(), "exited with a provider command in flight")
        open(self.gate, "w").close()
        # ... then exits by itself, leaving the instance running and saying so
        self.assertEqual(e.proc.wait(timeout=120), 0)
        e.log.close()
        e.proc = None
        log = e.logtext()
        self.assertIn("command_instance_left_running worker=%d" % wid, log)
        self.assertNotIn(["destroy", str(wid)], self.lines())
        # the next start knows the instance (handle stored) and creates nothing new
        e.start()
        ws = e.workers("cmd")
        self.assertEqual([(w["id"], w["instance"]) for w in ws], [(wid, "inst-%d" % wid)])
        self.assertEqual([x for x in self.lines() if x[0] == "create"], [["create", str(wid)]])


if __name__ == "__main__":
    unittest.main()
