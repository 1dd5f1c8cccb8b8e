"""Tests for ``rill search`` and ``rill reindex`` (rill/cli/search.py, rill/cli/reindex.py)."""

from __future__ import annotations

import io
import json
import os
from contextlib import redirect_stderr, redirect_stdout

from twisted.trial.unittest import SynchronousTestCase

from rill.cli import reindex, search
from rill.index.corpus import generate

CONFIG = """
[rill]
data_dir = {data_dir}

[host:web01]
address = 127.0.0.1
username = ops
password = secret

[tap:logs]
hosts = web01
path = /var/log/auth.log
"""


class CommandTests(SynchronousTestCase):
    """Both commands against a small generated data_dir, the service stopped."""

    def setUp(self) -> None:
        self.data_dir = os.path.abspath(self.mktemp())
        os.makedirs(self.data_dir)
        generate(self.data_dir, 900, hosts=1, files=3, generations=1)
        self.config = os.path.join(self.data_dir, "config.ini")
        with open(self.config, "w") as f:
            f.write(CONFIG.format(data_dir=self.data_dir))

    def run_command(self, module, *argv: str) -> tuple[int, str, str]:
        import argparse

        parser = argparse.ArgumentParser()
        parser.add_argument("-c", "--config")
        module.register(parser.add_subparsers())
        args = parser.parse_args(["-c", self.config, *argv])
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            code = args.func(args)
        return code, out.getvalue(), err.getvalue()

    def test_json_lines_and_summary(self) -> None:
        """--json prints one object per hit, then the cursor and count."""
        code, out, _ = self.run_command(search, "search", "sshd", "--json", "--limit", "2", "--count")
        self.assertEqual(code, 0)
        rows = [json.loads(line) for line in out.splitlines()]
        self.assertEqual([sorted(r) for r in rows[:2]], [["datetime", "generation", "host", "line", "offset", "path"]] * 2)
        self.assertEqual(rows[2]["count"], 300)
        code, out, _ = self.run_command(search, "search", "sshd", "--json", "--cursor", rows[2]["cursor"])
        self.assertNotIn(rows[0], [json.loads(line) for line in out.splitlines()])

    def test_human_output(self) -> None:
        """Without a terminal, one plain line per hit: datetime, host:path, line."""
        code, out, err = self.run_command(search, "search", "nginx limit:1")
        self.assertEqual(code, 0)
        datetime, where, line = out.rstrip("\n").split(" ", 2)
        self.assertEqual(where, "web01:/var/log/nginx/access.log")
        self.assertTrue(line.startswith(datetime))

    def test_bad_query_exits_2_with_one_line(self) -> None:
        """A bad query prints one error line naming the position and exits 2."""
        code, out, err = self.run_command(search, "search", "error AND (")
        self.assertEqual(code, 2)
        self.assertEqual(out, "")
        self.assertEqual(err, "rill search: error at position 12: expected a term, a phrase, a regex, a field or '('\n")

    def test_highlighter(self) -> None:
        """Matched words, phrases and regexes are what the terminal output highlights."""
        pattern = search.highlighter('failed "invalid user" /port \\d+/ -root')
        found = [m.group(0) for m in pattern.finditer("Failed password for invalid  user root port 22")]
        self.assertEqual(found, ["Failed", "invalid  user", "port 22"])

    def test_reindex_rebuilds(self) -> None:
        """reindex builds a fresh index that search then uses."""
        code, _, err = self.run_command(reindex, "reindex")
        self.assertEqual(code, 0)
        self.assertIn("reindexed 900 lines", err)
        self.assertTrue(os.path.exists(os.path.join(self.data_dir, "index", "manifest.json")))
        code, out, _ = self.run_command(search, "search", "sshd", "--json", "--count")
        self.assertEqual(json.loads(out.splitlines()[-1])["count"], 300)
