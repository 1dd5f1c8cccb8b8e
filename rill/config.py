"""Rill's INI configuration, parsed into frozen values.

Every section and key is whitelisted; every problem is collected (not just the
first) and reported as one line naming the file, the section, the key and what
is wrong.  ``read_config(path)`` is the production entry point,
``config_from_string(text)`` the one tests use.
"""

from __future__ import annotations

import configparser
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_PATHS = ("./config.ini", "/etc/rill/config.ini")


class ConfigError(Exception):
    """One or more configuration problems, each a complete one-line message."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Secret:
    """A secret taken from the environment, a file or the config itself.

    Its ``repr`` never shows the value, so a secret cannot leak through a log
    line that formats a config object.
    """

    source: str  # "literal" | "env" | "file"
    reference: str = field(repr=False)
    value: str = field(repr=False)

    def __repr__(self) -> str:
        where = "" if self.source == "literal" else f":{self.reference}"
        return f"Secret({self.source}{where})"

    __str__ = __repr__


@dataclass(frozen=True)
class HostKeyPolicy:
    """How a host's key is verified: ``known_hosts``, ``tofu`` or ``pinned``."""

    mode: str
    known_hosts: str | None = None  # file for mode known_hosts
    fingerprint: str | None = None  # "SHA256:..." for mode pinned


@dataclass(frozen=True)
class HostConfig:
    name: str
    address: str
    port: int = 22
    username: str = ""
    password: Secret | None = None
    key: str | None = None
    key_passphrase: Secret | None = None
    host_key: HostKeyPolicy = HostKeyPolicy("known_hosts")
    signal: str | None = None
    ping: bool = True
    keepalive_interval: float = 5.0
    keepalive_count: int = 3
    connect_timeout: float = 10.0
    max_channels: int = 10
    retry_initial: float = 1.0
    retry_max: float = 60.0

    @property
    def silence_timeout(self) -> float:
        """Seconds after which a connection that carries nothing is replaced."""
        return self.keepalive_interval * self.keepalive_count


@dataclass(frozen=True)
class TapConfig:
    name: str
    hosts: tuple[str, ...]
    paths: tuple[str, ...]
    parser: str = "raw"
    timezone: str = "UTC"
    datetime_format: str | None = None
    time_field: str = "time"
    multiline: str | None = None
    retention_age: float | None = None  # seconds
    retention_size: int | None = None  # bytes


@dataclass(frozen=True)
class RillConfig:
    source: str
    data_dir: str
    publish: str = "tcp://127.0.0.1:5556"
    publish_hwm: int = 10000
    control: str | None = "tcp://127.0.0.1:5557"
    manhole: str | None = None
    manhole_passwd: str | None = None
    metrics: str | None = None
    ping_interval: float = 1.0
    ping_misses: int = 3
    watch_interval: float = 1.0
    session_pool: int = 5
    max_sessions: int = 20
    max_request_age: float = 30.0
    hosts: Mapping[str, HostConfig] = field(default_factory=dict)
    groups: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    taps: Mapping[str, TapConfig] = field(default_factory=dict)

    def watches(self) -> list[tuple[HostConfig, TapConfig, str]]:
        """Every (host, tap, path pattern) this config asks Rill to watch."""
        return [
            (self.hosts[h], tap, path)
            for tap in self.taps.values()
            for h in tap.hosts
            for path in tap.paths
        ]

    def taps_for_host(self, host: str) -> list[TapConfig]:
        return [t for t in self.taps.values() if host in t.hosts]


# ---------------------------------------------------------------- value parsers


class _Bad(ValueError):
    """A value is wrong; the message says why (without the location)."""


def parse_int(text: str, minimum: int | None = None, maximum: int | None = None) -> int:
    try:
        value = int(text, 10)
    except ValueError:
        raise _Bad(f"expected a whole number, got {text!r}") from None
    if minimum is not None and value < minimum:
        raise _Bad(f"must be at least {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise _Bad(f"must be at most {maximum}, got {value}")
    return value


def parse_seconds(text: str, minimum: float = 0.0) -> float:
    try:
        value = float(text)
    except ValueError:
        raise _Bad(f"expected a number of seconds, got {text!r}") from None
    if not value > minimum or value != value or value == float("inf"):
        raise _Bad(f"must be a finite number greater than {minimum:g}, got {text}")
    return value


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> float:
    match = _DURATION.match(text)
    if not match:
        raise _Bad(f"expected a duration such as 30d, 12h or 90m, got {text!r}")
    return float(match.group(1)) * _DURATION_UNITS[match.group(2)]


_SIZE = re.compile(r"^\s*(\d+)\s*([KMGT]?i?B?)\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    match = _SIZE.match(text)
    if not match:
        raise _Bad(f"expected a size such as 500MB or 2GiB, got {text!r}")
    unit = match.group(2).upper().rstrip("B").rstrip("I")
    return int(match.group(1)) * 1024 ** " KMGT".index(unit or " ")


def parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("on", "yes", "true", "1"):
        return True
    if lowered in ("off", "no", "false", "0"):
        return False
    raise _Bad(f"expected on or off, got {text!r}")


_ZMQ_ENDPOINT = re.compile(r"^(tcp://(\*|[\w.\-]+|\[[0-9a-fA-F:.]+\]):(\d{1,5})|ipc://.+|inproc://.+)$")


def parse_zmq_endpoint(text: str) -> str:
    text = text.strip()
    match = _ZMQ_ENDPOINT.match(text)
    if not match or (match.group(3) and not 0 < int(match.group(3)) < 65536):
        raise _Bad(
            f"expected a ZeroMQ endpoint such as tcp://127.0.0.1:5556 or ipc:///run/rill.sock, got {text!r}"
        )
    return text


def parse_server_endpoint(text: str) -> str:
    """A Twisted server endpoint string such as ``tcp:9108:interface=127.0.0.1``."""
    from twisted.internet import endpoints

    text = text.strip()
    try:
        name, args, _ = endpoints._parseServer(text, None)  # syntax only, listens on nothing
    except Exception:
        raise _Bad(f"expected a Twisted endpoint such as tcp:9108:interface=127.0.0.1, got {text!r}") from None
    if name.lower() == "tcp":
        try:
            port = int(args[0])
        except (IndexError, ValueError):
            raise _Bad(f"expected a port number in {text!r}") from None
        if not 0 <= port < 65536:
            raise _Bad(f"port out of range in {text!r}")
    return text


def parse_secret(text: str) -> Secret:
    text = text.strip()
    if text.startswith("env:"):
        name = text[4:]
        if name not in os.environ:
            raise _Bad(f"environment variable {name} is not set")
        return Secret("env", name, os.environ[name])
    if text.startswith("file:"):
        path = os.path.expanduser(text[5:])
        try:
            with open(path, encoding="utf-8") as f:
                return Secret("file", path, f.read().rstrip("\r\n"))
        except OSError as e:
            raise _Bad(f"cannot read secret file {path}: {e.strerror}") from None
    return Secret("literal", "", text)


def parse_host_key(text: str) -> HostKeyPolicy:
    text = text.strip()
    if text == "tofu":
        return HostKeyPolicy("tofu")
    if text == "known_hosts":
        return HostKeyPolicy("known_hosts", os.path.expanduser("~/.ssh/known_hosts"))
    if text.startswith("known_hosts="):
        return HostKeyPolicy("known_hosts", os.path.expanduser(text.split("=", 1)[1]))
    if re.fullmatch(r"SHA256:[A-Za-z0-9+/]{43}=?", text):
        return HostKeyPolicy("pinned", fingerprint=text.rstrip("="))
    raise _Bad(f"expected known_hosts, known_hosts=PATH, tofu or SHA256:<fingerprint>, got {text!r}")


def parse_key_file(text: str) -> str:
    path = os.path.expanduser(text.strip())
    if not os.access(path, os.R_OK):
        raise _Bad(f"cannot read private key file {path}")
    return path


_RANGE = re.compile(r"\[(\d+)-(\d+)\]")


def expand_addresses(text: str) -> list[str]:
    """Expand ``web[01-40].example.net, db1`` into every address it names.

    A range keeps the width of its first bound, so ``[01-40]`` gives ``01`` .. ``40``.
    """
    addresses: list[str] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        addresses.extend(_expand_one(item))
    if not addresses:
        raise _Bad("names no address")
    return addresses


def _expand_one(item: str) -> list[str]:
    match = _RANGE.search(item)
    if match is None:
        if "[" in item or "]" in item:
            raise _Bad(f"bad range in {item!r}: expected [FIRST-LAST] with digits, such as web[01-40]")
        return [item]
    first, last = match.group(1), match.group(2)
    if int(first) > int(last):
        raise _Bad(f"bad range in {item!r}: {first} is greater than {last}")
    if int(last) - int(first) >= 100000:
        raise _Bad(f"bad range in {item!r}: more than 100000 addresses")
    head, tail = item[: match.start()], item[match.end() :]
    width = len(first)
    return [
        address
        for n in range(int(first), int(last) + 1)
        for address in _expand_one(f"{head}{n:0{width}d}{tail}")
    ]


def parse_parser(text: str) -> str:
    text = text.strip()
    from rill.parsers import validate_parser_spec

    problem = validate_parser_spec(text)
    if problem:
        raise _Bad(problem)
    return text


def parse_timezone(text: str) -> str:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    text = text.strip()
    try:
        ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError):
        raise _Bad(f"unknown time zone {text!r} (expected a name such as UTC or Europe/Paris)") from None
    return text


def parse_multiline(text: str) -> str:
    text = text.strip()
    if text == "indented":
        return text
    if text.startswith("regex:"):
        try:
            re.compile(text[6:])
        except re.error as e:
            raise _Bad(f"bad regular expression: {e}") from None
        return text
    raise _Bad(f"expected indented or regex:<start pattern>, got {text!r}")


def parse_paths(text: str) -> tuple[str, ...]:
    paths = tuple(p.strip() for p in re.split(r"[\n,]", text) if p.strip())
    if not paths:
        raise _Bad("names no path")
    for path in paths:
        if not path.startswith("/"):
            raise _Bad(f"path {path!r} is not absolute")
        if "\n" in path or "\0" in path:
            raise _Bad(f"path {path!r} holds a newline or NUL")
        if any(c in os.path.dirname(path) for c in "*?["):
            raise _Bad(f"path {path!r}: a glob is allowed in the file name only, not in directories")
    return paths


# ---------------------------------------------------------------- the reader

_HOST_KEYS: dict[str, Callable[[str], object]] = {
    "address": str.strip,
    "port": lambda t: parse_int(t, 1, 65535),
    "username": str.strip,
    "password": parse_secret,
    "key": parse_key_file,
    "key_passphrase": parse_secret,
    "host_key": parse_host_key,
    "signal": parse_zmq_endpoint,
    "ping": parse_bool,
    "keepalive_interval": lambda t: parse_seconds(t, 0.0),
    "keepalive_count": lambda t: parse_int(t, 1, 100),
    "connect_timeout": lambda t: parse_seconds(t, 0.0),
    "max_channels": lambda t: parse_int(t, 1, 1000),
    "retry_initial": lambda t: parse_seconds(t, 0.0),
    "retry_max": lambda t: parse_seconds(t, 0.0),
}

_RILL_KEYS: dict[str, Callable[[str], object]] = {
    "data_dir": lambda t: os.path.abspath(os.path.expanduser(t.strip())),
    "publish": parse_zmq_endpoint,
    "publish_hwm": lambda t: parse_int(t, 1, 10_000_000),
    "control": parse_zmq_endpoint,
    "manhole": parse_server_endpoint,
    "manhole_passwd": lambda t: os.path.expanduser(t.strip()),
    "metrics": parse_server_endpoint,
    "ping_interval": lambda t: parse_seconds(t, 0.0),
    "ping_misses": lambda t: parse_int(t, 1, 100),
    "watch_interval": lambda t: parse_seconds(t, 0.0),
    "session_pool": lambda t: parse_int(t, 0, 1000),
    "max_sessions": lambda t: parse_int(t, 1, 10000),
    "max_request_age": lambda t: parse_seconds(t, 0.0),
}

_TAP_KEYS: dict[str, Callable[[str], object]] = {
    "hosts": lambda t: tuple(h.strip() for h in t.split(",") if h.strip()),
    "path": parse_paths,
    "paths": parse_paths,
    "parser": parse_parser,
    "timezone": parse_timezone,
    "datetime_format": str.strip,
    "time_field": str.strip,
    "multiline": parse_multiline,
    "retention_age": parse_duration,
    "retention_size": parse_size,
}

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


class _Collector:
    """Collects problems, each as a complete line naming file, section and key."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.problems: list[str] = []

    def add(self, section: str | None, key: str | None, message: str) -> None:
        where = self.source
        if section is not None:
            where += f": [{section}]"
        if key is not None:
            where += f" {key}"
        self.problems.append(f"{where}: {message}")

    def values(
        self,
        section: str,
        items: Mapping[str, str],
        allowed: Mapping[str, Callable[[str], object]],
    ) -> dict[str, object]:
        parsed: dict[str, object] = {}
        for key, raw in items.items():
            if key not in allowed:
                self.add(section, key, f"unknown key (known keys: {', '.join(sorted(allowed))})")
                continue
            try:
                parsed[key] = allowed[key](raw)
            except _Bad as e:
                self.add(section, key, str(e))
        return parsed


def config_from_string(text: str, source: str = "<string>") -> RillConfig:
    """Parse config text; raise ConfigError listing every problem found."""
    errors = _Collector(source)
    parser = configparser.ConfigParser(
        interpolation=None, inline_comment_prefixes=(";", "#"), strict=True, default_section="\0none"
    )
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    try:
        parser.read_string(text, source=source)
    except configparser.Error as e:
        raise ConfigError([f"{source}: {_configparser_message(e)}"]) from None
    hosts: dict[str, HostConfig] = {}
    groups: dict[str, tuple[str, ...]] = {}
    taps: dict[str, TapConfig] = {}
    rill_values: dict[str, object] = {}
    tap_sections: list[tuple[str, str, dict[str, object]]] = []
    for section in parser.sections():
        kind, _, name = section.partition(":")
        items = dict(parser.items(section))
        if section == "rill":
            rill_values = errors.values(section, items, _RILL_KEYS)
        elif kind in ("host", "hosts", "tap") and _NAME.match(name):
            if kind == "tap":
                tap_sections.append((section, name, errors.values(section, items, _TAP_KEYS)))
            else:
                _read_hosts(errors, section, kind, name, items, hosts, groups)
        elif kind in ("host", "hosts", "tap"):
            errors.add(section, None, f"bad name {name!r}: use letters, digits, '.', '_' and '-'")
        else:
            errors.add(section, None, "unknown section (expected [rill], [host:NAME], [hosts:GROUP] or [tap:NAME])")
    if "rill" not in parser.sections():
        errors.add(None, None, "missing section [rill]")
    elif "data_dir" not in rill_values and not any(p.endswith("data_dir") for p in errors.problems):
        errors.add("rill", "data_dir", "missing (where Rill keeps its mirror and index)")
    for section, name, values in tap_sections:
        tap = _make_tap(errors, section, name, values, hosts, groups)
        if tap is not None:
            taps[name] = tap
    _check_endpoints(errors, rill_values, hosts)
    if rill_values.get("manhole") and not rill_values.get("manhole_passwd"):
        errors.add("rill", "manhole_passwd", "missing: the manhole needs a password file (lines user:password)")
    if errors.problems:
        raise ConfigError(errors.problems)
    return RillConfig(source=source, hosts=hosts, groups=groups, taps=taps, **rill_values)  # type: ignore[arg-type]


def _configparser_message(e: configparser.Error) -> str:
    if isinstance(e, configparser.DuplicateSectionError):
        return f"line {e.lineno}: section [{e.section}] appears twice"
    if isinstance(e, configparser.DuplicateOptionError):
        return f"line {e.lineno}: [{e.section}] {e.option}: key appears twice"
    if isinstance(e, configparser.MissingSectionHeaderError):
        return f"line {e.lineno}: a key before any [section]"
    if isinstance(e, configparser.ParsingError):
        lines = ", ".join(str(lineno) for lineno, _ in e.errors)
        return f"line {lines}: not a 'key = value' line"
    return str(e).splitlines()[0]


def _read_hosts(
    errors: _Collector,
    section: str,
    kind: str,
    name: str,
    items: dict[str, str],
    hosts: dict[str, HostConfig],
    groups: dict[str, tuple[str, ...]],
) -> None:
    allowed = dict(_HOST_KEYS)
    if kind == "hosts":
        del allowed["address"]
        allowed["addresses"] = expand_addresses
    values = errors.values(section, items, allowed)
    bad_before = len(errors.problems)
    if kind == "hosts" and "addresses" not in items:
        errors.add(section, "addresses", "missing (for example addresses = web[01-40].example.net)")
    if "username" not in items:
        errors.add(section, "username", "missing")
    if "password" in values and "key" in values:
        errors.add(section, "key", "give either password or key, not both")
    if "password" not in items and "key" not in items:
        errors.add(section, "password", "missing: give password (env:, file: or literal) or key = PATH")
    if values.get("signal") is not None and kind == "hosts":
        errors.add(section, "signal", "not allowed in a group: each host needs its own endpoint")
    if len(errors.problems) > bad_before or any(f"[{section}]" in p for p in errors.problems):
        return
    if kind == "host":
        values.setdefault("address", name)
        if name in hosts or name in groups:
            errors.add(section, None, f"host name {name!r} is used twice")
            return
        hosts[name] = HostConfig(name=name, **values)  # type: ignore[arg-type]
        return
    addresses = values.pop("addresses")
    if name in hosts or name in groups:
        errors.add(section, None, f"group name {name!r} is also a host or group name")
        return
    for address in addresses:  # type: ignore[attr-defined]
        if address in hosts:
            errors.add(section, "addresses", f"{address} is already a host")
            return
        hosts[address] = HostConfig(name=address, address=address, **values)  # type: ignore[arg-type]
    groups[name] = tuple(addresses)  # type: ignore[arg-type]


def _make_tap(
    errors: _Collector,
    section: str,
    name: str,
    values: dict[str, object],
    hosts: Mapping[str, HostConfig],
    groups: Mapping[str, tuple[str, ...]],
) -> TapConfig | None:
    if "path" in values and "paths" in values:
        errors.add(section, "paths", "give path or paths, not both")
        return None
    paths = values.pop("path", None) or values.pop("paths", None)
    if paths is None:
        if not any(f"[{section}] path" in p for p in errors.problems):
            errors.add(section, "path", "missing (the file or glob to watch)")
        return None
    names = values.pop("hosts", None)
    if not names:
        errors.add(section, "hosts", "missing (host and group names, comma separated)")
        return None
    resolved: list[str] = []
    for host in names:  # type: ignore[attr-defined]
        if host in groups:
            resolved.extend(groups[host])
        elif host in hosts:
            resolved.append(host)
        else:
            errors.add(section, "hosts", f"no [host:{host}] or [hosts:{host}] section")
            return None
    if any(f"[{section}]" in p for p in errors.problems):
        return None
    return TapConfig(name=name, hosts=tuple(dict.fromkeys(resolved)), paths=paths, **values)  # type: ignore[arg-type]


def _check_endpoints(errors: _Collector, rill: Mapping[str, object], hosts: Mapping[str, HostConfig]) -> None:
    seen: dict[str, str] = {}
    candidates = [("rill", key, rill.get(key)) for key in ("publish", "control")]
    candidates += [(f"host:{h.name}", "signal", h.signal) for h in hosts.values()]
    for section, key, endpoint in candidates:
        if not isinstance(endpoint, str) or endpoint.endswith(":0"):
            continue
        if endpoint in seen:
            errors.add(section, key, f"{endpoint} is already used by {seen[endpoint]}")
        else:
            seen[endpoint] = f"[{section}] {key}"


def read_config(path: str) -> RillConfig:
    """Read and validate the config file at ``path``."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError([f"{path}: cannot read config: {e.strerror}"]) from None
    except UnicodeDecodeError as e:
        raise ConfigError([f"{path}: not UTF-8 text ({e.reason} at byte {e.start})"]) from None
    return config_from_string(text, source=path)


def find_config(explicit: str | None) -> str:
    """The config path the CLI uses: -c, else $RILL_CONFIG, else the defaults."""
    if explicit:
        return explicit
    if os.environ.get("RILL_CONFIG"):
        return os.environ["RILL_CONFIG"]
    for candidate in DEFAULT_PATHS:
        if os.path.exists(candidate):
            return candidate
    return DEFAULT_PATHS[0]


