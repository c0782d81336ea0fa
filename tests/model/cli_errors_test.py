"""sgpu-model's command-line tools on a model that cannot be loaded: a clear error, exit 1, and
nothing leaked on the way out (LeakSanitizer reports it under `make sanitize`)."""
import os
import subprocess
import tempfile
import unittest

BIN = os.environ.get("SGPU_BIN", os.path.join(os.path.dirname(__file__), "..", "..", "bin"))
MODEL = os.path.join(BIN, "sgpu-model")
SAN = ("ERROR: LeakSanitizer", "ERROR: AddressSanitizer", "runtime error:")


class LoadErrors(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not os.access(MODEL, os.X_OK):
            raise unittest.SkipTest("sgpu-model not built")
        cls.dir = tempfile.mkdtemp(prefix="sgpu-model-cli-")
        cls.junk = os.path.join(cls.dir, "junk.gguf")
        with open(cls.junk, "wb") as f:
            f.write(b"GGUF" + b"\xff" * 60)

    def run_tool(self, *args):
        p = subprocess.run([MODEL, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True, timeout=300)
        for pat in SAN:
            self.assertNotIn(pat, p.stderr, p.stderr[-3000:])
        return p

    def test_logits_and_generate_with_unloadable_model(self):
        for cmd in ("logits", "generate"):
            for model in (os.path.join(self.dir, "missing.gguf"), self.junk):
                with self.subTest(cmd=cmd, model=model):
                    p = self.run_tool(cmd, "--model", model, "--tokens", "1,2,3")
                    self.assertEqual(p.returncode, 1, p.stderr)
                    self.assertIn("event=fatal", p.stderr)
                    self.assertEqual(p.stdout, "")


if __name__ == "__main__":
    unittest.main()
