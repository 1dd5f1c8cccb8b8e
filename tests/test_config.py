"""The INI config: good configs parse to frozen values, bad ones give one clear line each."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial import unittest

from rill.config import ConfigError, config_from_string, expand_addresses

GOOD = """
[rill]
data_dir = /tmp/rill-data
publish = tcp://127.0.0.1:5556
ping_interval = 0.5

[host:web1]
address = 10.0.0.5
username = ops
password = hunter2
host_key = tofu

[hosts:web]
addresses = web[01-03].example.net, db1
username = ops
password = env:RILL_TEST_PASSWORD

[tap:syslog]
hosts = web1, web
path = /var/log/syslog
parser = raw
"""

#: (name, config text, a fragment the single error line must contain)
BAD = [
    ("unknown key", "[rill]\ndata_dir = /x\ncolour = blue\n", "[rill] colour: unknown key"),
    ("unknown section", "[rill]\ndata_dir = /x\n[server:a]\nx = 1\n", "[server:a]: unknown section"),
    ("missing [rill]", "[host:a]\nusername = u\npassword = p\n", "missing section [rill]"),
    ("missing data_dir", "[rill]\npublish = tcp://127.0.0.1:1\n", "[rill] data_dir: missing"),
    (
        "missing host",
        "[rill]\ndata_dir = /x\n[tap:t]\nhosts = nowhere\npath = /var/log/x\n",
        "[tap:t] hosts: no [host:nowhere] or [hosts:nowhere] section",
    ),
    (
        "bad range",
        "[rill]\ndata_dir = /x\n[hosts:w]\naddresses = web[40-01].x\nusername = u\npassword = p\n",
        "[hosts:w] addresses: bad range in 'web[40-01].x'",
    ),
    (
        "bad range syntax",
        "[rill]\ndata_dir = /x\n[hosts:w]\naddresses = web[a-b].x\nusername = u\npassword = p\n",
        "[hosts:w] addresses: bad range",
    ),
    (
        "unreadable secret file",
        "[rill]\ndata_dir = /x\n[host:a]\nusername = u\npassword = file:/nonexistent/secret\n",
        "[host:a] password: cannot read secret file /nonexistent/secret",
    ),
    (
        "unset environment secret",
        "[rill]\ndata_dir = /x\n[host:a]\nusername = u\npassword = env:RILL_SURELY_UNSET_VARIABLE\n",
        "[host:a] password: environment variable RILL_SURELY_UNSET_VARIABLE is not set",
    ),
    ("bad endpoint", "[rill]\ndata_dir = /x\npublish = 127.0.0.1:5556\n", "[rill] publish: expected a ZeroMQ endpoint"),
    (
        "bad twisted endpoint",
        "[rill]\ndata_dir = /x\nmetrics = tcp:notaport\n",
        "[rill] metrics:",
    ),
    ("bad port", "[rill]\ndata_dir = /x\n[host:a]\nport = 70000\nusername = u\npassword = p\n", "[host:a] port: must be at most 65535"),
    ("bad number", "[rill]\ndata_dir = /x\nping_interval = soon\n", "[rill] ping_interval: expected a number of seconds"),
    ("negative interval", "[rill]\ndata_dir = /x\nping_interval = -1\n", "[rill] ping_interval: must be a finite number greater than 0"),
    (
        "bad host_key",
        "[rill]\ndata_dir = /x\n[host:a]\nusername = u\npassword = p\nhost_key = trust-me\n",
        "[host:a] host_key: expected known_hosts, known_hosts=PATH, tofu or SHA256:<fingerprint>",
    ),
    (
        "no credentials",
        "[rill]\ndata_dir = /x\n[host:a]\nusername = u\n",
        "[host:a] password: missing: give password",
    ),
    (
        "relative path",
        "[rill]\ndata_dir = /x\n[host:a]\nusername = u\npassword = p\n[tap:t]\nhosts = a\npath = var/log/x\n",
        "[tap:t] path: path 'var/log/x' is not absolute",
    ),
    (
        "glob in directory",
        "[rill]\ndata_dir = /x\n[host:a]\nusername = u\npassword = p\n[tap:t]\nhosts = a\npath = /var/*/x\n",
        "a glob is allowed in the file name only",
    ),
    (
        "unknown parser",
        "[rill]\ndata_dir = /x\n[host:a]\nusername = u\npassword = p\n[tap:t]\nhosts = a\npath = /x\nparser = cobol\n",
        "[tap:t] parser:",
    ),
    ("not key = value", "[rill]\ndata_dir = /x\njust some words\n", "not a 'key = value' line"),
    ("duplicate key", "[rill]\ndata_dir = /x\ndata_dir = /y\n", "data_dir: key appears twice"),
    (
        "endpoint used twice",
        "[rill]\ndata_dir = /x\npublish = tcp://127.0.0.1:5556\ncontrol = tcp://127.0.0.1:5556\n",
        "[rill] control: tcp://127.0.0.1:5556 is already used by [rill] publish",
    ),
]


class GoodConfigTests(unittest.SynchronousTestCase):
    def setUp(self) -> None:
        os.environ["RILL_TEST_PASSWORD"] = "s3cret"
        self.addCleanup(os.environ.pop, "RILL_TEST_PASSWORD")

    def test_parses_to_values(self) -> None:
        """A complete config becomes hosts, groups and taps with resolved names."""
        config = config_from_string(GOOD)
        self.assertEqual(config.data_dir, "/tmp/rill-data")
        self.assertEqual(config.ping_interval, 0.5)
        self.assertEqual(sorted(config.hosts), ["db1", "web01.example.net", "web02.example.net", "web03.example.net", "web1"])
        self.assertEqual(config.taps["syslog"].hosts[0], "web1")
        self.assertEqual(len(config.taps["syslog"].hosts), 5)
        self.assertEqual(config.hosts["web02.example.net"].password.value, "s3cret")

    def test_values_are_frozen(self) -> None:
        """Config values cannot be changed after parsing."""
        config = config_from_string(GOOD)
        with self.assertRaises(Exception):
            config.hosts["web1"].port = 23  # type: ignore[misc]

    def test_secrets_never_in_repr(self) -> None:
        """A host's repr (what a log line would show) holds no password."""
        config = config_from_string(GOOD)
        self.assertNotIn("hunter2", repr(config.hosts["web1"]))
        self.assertNotIn("s3cret", repr(config))

    def test_secret_from_file(self) -> None:
        """password = file:PATH reads the first line of the file."""
        with tempfile.NamedTemporaryFile("w", suffix=".pw", delete=False) as f:
            f.write("from-a-file\n")
        self.addCleanup(os.unlink, f.name)
        config = config_from_string(f"[rill]\ndata_dir = /x\n[host:a]\nusername = u\npassword = file:{f.name}\n")
        self.assertEqual(config.hosts["a"].password.value, "from-a-file")


class BadConfigTests(unittest.SynchronousTestCase):
    def test_each_bad_config_gives_one_clear_line(self) -> None:
        """Every bad config names the file, section and key in one line."""
        for name, text, fragment in BAD:
            with self.subTest(name):
                with self.assertRaises(ConfigError) as caught:
                    config_from_string(text, source="cfg.ini")
                problems = caught.exception.problems
                self.assertEqual(len(problems), 1, f"{name}: {problems}")
                self.assertTrue(problems[0].startswith("cfg.ini"), problems[0])
                self.assertIn(fragment, problems[0], name)
                self.assertNotIn("\n", problems[0])

    def test_all_problems_are_collected(self) -> None:
        """Several mistakes are reported together, not one per run."""
        text = "[rill]\ndata_dir = /x\nping_interval = x\ncolour = 1\n[host:a]\nport = 0\nusername = u\npassword = p\n"
        with self.assertRaises(ConfigError) as caught:
            config_from_string(text)
        self.assertEqual(len(caught.exception.problems), 3)

    def test_rill_check_prints_lines_without_traceback(self) -> None:
        """`rill check` on a bad config prints its problems, exits 2, and shows no traceback."""
        with tempfile.NamedTemporaryFile("w", suffix=".ini", delete=False) as f:
            f.write("[rill]\ndata_dir = /x\ncolour = blue\npublish = nowhere\n")
        self.addCleanup(os.unlink, f.name)
        result = subprocess.run(
            [sys.executable, "-m", "rill.cli.main", "-c", f.name, "check"], capture_output=True, text=True
        )
        self.assertEqual(result.returncode, 2)
        self.assertNotIn("Traceback", result.stderr)
        self.assertEqual(len(result.stderr.strip().splitlines()), 2, result.stderr)

    def test_twistd_bad_config_one_line(self) -> None:
        """`twistd rill` with a bad config stops with the problem line, not a traceback."""
        with tempfile.NamedTemporaryFile("w", suffix=".ini", delete=False) as f:
            f.write("[rill]\ndata_dir = /x\nping_interval = soon\n")
        self.addCleanup(os.unlink, f.name)
        twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
        result = subprocess.run([twistd, "-n", "--pidfile=", "rill", "-c", f.name], capture_output=True, text=True)
        self.assertNotEqual(result.returncode, 0)
        self.assertNotIn("Traceback", result.stderr + result.stdout)
        self.assertIn("[rill] ping_interval: expected a number of seconds", result.stderr)

    def test_missing_file(self) -> None:
        """A config path that does not exist is one line."""
        result = subprocess.run(
            [sys.executable, "-m", "rill.cli.main", "-c", "/nonexistent/rill.ini", "cat", "h", "/p"],
            capture_output=True,
            text=True,
        )
        self.assertEqual(result.returncode, 2)
        self.assertEqual(result.stderr.strip(), "/nonexistent/rill.ini: cannot read config: No such file or directory")


class RangeTests(unittest.SynchronousTestCase):
    def test_zero_padding_kept(self) -> None:
        """web[01-40] gives 40 names padded to two digits."""
        names = expand_addresses("web[01-40].example.net")
        self.assertEqual(len(names), 40)
        self.assertEqual(names[0], "web01.example.net")
        self.assertEqual(names[-1], "web40.example.net")

    def test_two_ranges(self) -> None:
        """Ranges multiply: rack[1-2]-node[1-3]."""
        self.assertEqual(len(expand_addresses("rack[1-2]-node[1-3]")), 6)

    @given(st.integers(0, 500), st.integers(0, 500), st.integers(1, 4))
    def test_range_size(self, a: int, b: int, width: int) -> None:
        """A range [a-b] names exactly b-a+1 distinct hosts, or is rejected when a > b."""
        text = f"h[{a:0{width}d}-{b:0{width}d}]"
        if a > b:
            with self.assertRaises(ValueError):
                expand_addresses(text)
        else:
            names = expand_addresses(text)
            self.assertEqual(len(set(names)), b - a + 1)
