"""docs/configuration.md must not fall behind the programs' own help texts.

For every program (and every `sgpu` subcommand) this runs its help, extracts each `--flag` and
each environment variable name the help documents, and asserts that the name appears in the
program's section of docs/configuration.md (the `## <program>` heading).  Adding an option to a
program's --help without documenting it fails `make test`.

Environment variable names taken from a help text:
- UPPER_CASE words with an underscore (WORKER_PORT, SGPU_TLS_KEY, VAST_TCP_PORT_<...>);
- `$NAME` references ($PATH, $WORKSPACE_DIR);
- the ENV column of a `--flag  ENV  meaning` table row (BACKEND, UNSECURED);
- the name after `Env:` (sgpu-launch).
For the programs that print their option table (`--help-markdown`), each row's flag must also
have a row in the docs table that names the row's variable and literal default.
Nothing here starts a server: help texts only (sgpu-model's bare command line would serve).
"""
import os
import re
import subprocess
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.environ.get("SGPU_ROOT") or os.path.join(HERE, "..", "..")
BIN = os.environ.get("SGPU_BIN") or os.path.join(ROOT, "bin")
DOC = os.path.join(ROOT, "docs", "configuration.md")

# Words with an underscore in help texts that are not environment variables.
NOT_ENV = set()

FLAG_RE = re.compile(r"(?<![\w-])(--[a-z0-9][a-z0-9-]*)")
ENV_US_RE = re.compile(r"(?<![A-Za-z0-9_$])([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+_?)(?![a-z0-9])")
ENV_DOLLAR_RE = re.compile(r"\$([A-Z][A-Z0-9_]*)")
ENV_COLUMN_RE = re.compile(r"^\s+--[a-z0-9-]+\s{2,}([A-Z][A-Z0-9_]*)\s{2,}", re.M)
ENV_MARK_RE = re.compile(r"Env:\s*([A-Z][A-Z0-9_]*)")


def run_help(argv):
    """stdout + stderr of a help invocation (a 2 exit is fine: some programs use it for usage)."""
    p = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=20)
    return p.returncode, (p.stdout + p.stderr).decode("utf-8", "replace")


def model_help():
    """sgpu-model: `--help` if it answers with a usage text, else the `help` subcommand's usage.

    A bare `sgpu-model` (or a flag-only command line) serves the tiny model, so only an invocation
    that prints a usage text and exits is accepted here."""
    exe = os.path.join(BIN, "sgpu-model")
    texts = []
    for argv in ([exe, "--help"], [exe, "help"]):
        rc, out = run_help(argv)
        if "usage" in out.lower():
            texts.append(out)
            if rc == 0:
                break
    return "\n".join(texts)


def env_names(text):
    names = set(ENV_US_RE.findall(text)) | set(ENV_DOLLAR_RE.findall(text))
    names |= set(ENV_COLUMN_RE.findall(text)) | set(ENV_MARK_RE.findall(text))
    return {n for n in names if n not in NOT_ENV}


def flag_names(text):
    return set(FLAG_RE.findall(text))


def doc_sections():
    """{first word of a `## ` heading: the text up to the next `## ` heading}."""
    with open(DOC, encoding="utf-8") as f:
        doc = f.read()
    sections = {}
    for part in re.split(r"^## ", doc, flags=re.M)[1:]:
        head = part.split("\n", 1)[0].strip().strip("`")
        key = head.split()[0].strip("`") if head else ""
        sections[key] = sections.get(key, "") + part
    return sections


def mentioned(doc, name):
    if name.startswith("--"):
        return re.search(r"(?<![\w-])" + re.escape(name) + r"(?![\w-])", doc) is not None
    return re.search(r"(?<![A-Za-z0-9_])" + re.escape(name) + r"(?![A-Za-z0-9_])", doc) is not None


class ConfigDocsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.sections = doc_sections()

    def help_of(self, prog, *args):
        exe = os.path.join(BIN, prog)
        self.assertTrue(os.access(exe, os.X_OK), exe + " is not built")
        rc, out = run_help([exe, *args, "--help"])
        self.assertEqual(rc, 0, "%s %s --help exited %d:\n%s" % (prog, " ".join(args), rc, out))
        self.assertIn("usage", out.lower())
        return out

    def check(self, prog, text, min_flags=1):
        self.assertIn(prog, self.sections, "docs/configuration.md has no '## %s' section" % prog)
        doc = self.sections[prog]
        flags = flag_names(text)
        self.assertGreaterEqual(len(flags), min_flags, "no flags found in %s help:\n%s"
                                % (prog, text))
        missing = sorted(n for n in flags | env_names(text) if not mentioned(doc, n))
        self.assertEqual(missing, [], "%s: in --help but not in docs/configuration.md "
                         "section '## %s'" % (prog, prog))
        return flags

    def check_rows(self, prog, *args):
        """The option table itself (`--help-markdown`): every row's flag has a line in the
        program's docs table that also names the row's variable and its literal default."""
        exe = os.path.join(BIN, prog)
        rc, out = run_help([exe, *args, "--help-markdown"])
        self.assertEqual(rc, 0, out)
        rows = [r for r in out.splitlines() if r.startswith("| ") and "---" not in r][1:]
        self.assertGreater(len(rows), 0, out)
        doc_lines = [l for l in self.sections[prog].splitlines() if l.startswith("|")]
        for row in rows:
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", row)[1:-1]]
            env, flag, default = cells[0].strip("`"), cells[1].strip("`"), cells[2]
            if not flag:
                continue
            long_flag = FLAG_RE.search(flag)
            name = long_flag.group(1) if long_flag else flag.split()[0]
            lines = [l for l in doc_lines if mentioned(l.split("|")[1] + l.split("|")[2], name)]
            with self.subTest(prog=prog, flag=name):
                self.assertTrue(lines, "%s %s: no docs table row" % (prog, name))
                line = lines[0]
                if env:
                    self.assertTrue(mentioned(line, env), "%s %s: row does not name %s:\n%s"
                                    % (prog, name, env, line))
                if default.startswith("`") and default != "`\"\"`":
                    self.assertIn(default.strip("`"), line,
                                  "%s %s: default %s not in the docs row:\n%s"
                                  % (prog, name, default, line))

    def test_table_rows(self):
        for prog in ("sgpu-worker", "sgpu-engine", "sgpu-gateway", "sgpu-launch"):
            self.check_rows(prog)

    def test_worker(self):
        text = self.help_of("sgpu-worker")
        self.check("sgpu-worker", text, min_flags=50)
        # the extraction itself: the table's ENV column and the `<...>` port variable
        envs = env_names(text)
        for n in ("BACKEND", "UNSECURED", "WORKER_PORT", "VAST_TCP_PORT_", "SGPU_LOG_LEVEL"):
            self.assertIn(n, envs)

    def test_model(self):
        text = model_help()
        self.assertIn("usage", text.lower(), "sgpu-model prints no usage text")
        flags = self.check("sgpu-model", text, min_flags=10)
        self.assertIn("--model", flags)
        # subcommands named in the usage line are documented too
        doc = self.sections["sgpu-model"]
        first = re.search(r"usage:\s*sgpu-model\s+(\S+)", text)
        self.assertIsNotNone(first)
        for sub in first.group(1).strip("[]").split("|"):
            self.assertIn("sgpu-model " + sub, doc, "subcommand %s not documented" % sub)

    def test_engine(self):
        text = self.help_of("sgpu-engine")
        flags = self.check("sgpu-engine", text, min_flags=10)
        self.assertIn("--keep-workers", flags)

    def test_launch(self):
        text = self.help_of("sgpu-launch")
        self.check("sgpu-launch", text, min_flags=10)
        self.assertIn("SGPU_MODEL_CMD", env_names(text))

    def test_gateway(self):
        text = self.help_of("sgpu-gateway")
        flags = self.check("sgpu-gateway", text, min_flags=10)
        self.assertIn("--engine", flags)

    def test_cli(self):
        top = self.help_of("sgpu")
        self.check("sgpu", top, min_flags=5)
        subs = re.findall(r"^  ([a-z]+)\s{2,}\S", top.split("Global options")[0], re.M)
        self.assertGreaterEqual(len(subs), 5, "no subcommands found in sgpu --help")
        for sub in subs:
            with self.subTest(sub=sub):
                text = self.help_of("sgpu", sub)
                self.assertIn("sgpu " + sub, self.sections["sgpu"],
                              "subcommand %s not documented" % sub)
                self.check("sgpu", text, min_flags=0)


if __name__ == "__main__":
    unittest.main()
