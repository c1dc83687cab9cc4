"""Prometheus ``/metrics`` and ``/healthz`` (``nasdaq_protocols.soup.metrics``, issue 18)
of the ``soup`` command: ``--metrics`` on serve, tail, record and relay, scraped while messages
flow, and the mistakes it reports (no extra installed, a bad address, a port in use).

The commands run as real processes (``cliutil``); the "without the extra" tests run them with a
``sitecustomize`` that makes ``import prometheus_client`` fail.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import cliutil
from cliutil import processes
from metricsutil import HOST, Samples, http_get, parse, scrape, urllib_get, value
from nasdaq_protocols.soup.cli.running import STOP_GRACE
from nasdaq_protocols.soup.metrics import INSTALL_HINT
from netutil import WAIT, free_port, nats_server_binary

__all__ = ["processes"]  # a fixture, imported for the tests below


# --------------------------------------------------------------------------- the soup command


def soup_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "nasdaq_protocols.soup.cli", *args]


#: ``soup ... --metrics`` says where it serves: ``soup tail: metrics on http://H:P/metrics, ...``.
METRICS_LINE = r"metrics on http://([\d.]+):(\d+)/metrics, health check on http://\1:\2/healthz"


def metrics_address(process: cliutil.Running) -> tuple[str, int]:
    """The address a ``soup ... --metrics 127.0.0.1:0`` process says it serves its metrics on."""
    found = process.wait_stderr(METRICS_LINE)
    return found.group(1), int(found.group(2))


def scrape_sync(address: tuple[str, int]) -> Samples:
    status, content_type, body = urllib_get(address, "/metrics")
    assert status == 200, body
    assert content_type.startswith("text/plain; version=0.0.4"), content_type
    return parse(body)


def stops_cleanly(process: cliutil.Running, sig: int, metrics: tuple[str, int]) -> None:
    """``sig`` stops ``process`` with ``128 + sig`` well within the stop grace, though a scraper
    holds an idle connection to its metrics endpoint; the endpoint is gone afterwards."""
    with socket.create_connection(metrics, timeout=WAIT):  # idle: never sends a request
        started = time.monotonic()
        assert process.stop(sig) == 128 + sig, process.stderr()
        took = time.monotonic() - started
    assert took < STOP_GRACE, f"{took:.2f} s to stop"
    assert "cleaning up took over" not in process.stderr(), process.stderr()
    assert "Traceback" not in process.stderr(), process.stderr()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(metrics, timeout=WAIT).close()


async def test_soup_serve_and_soup_tail_are_scraped_while_messages_flow() -> None:
    """``soup serve --stdin --metrics`` fed lines, ``soup tail --metrics`` printing them: both
    endpoints scraped while lines flow, checked against the lines sent and printed."""
    port, serve_metrics_port, tail_metrics_port = free_port(), free_port(), free_port()
    serve = await asyncio.create_subprocess_exec(
        *soup_command("serve", "--listen", f"{HOST}:{port}", "--stdin", "--user", "u"),
        *("--metrics", f"{HOST}:{serve_metrics_port}"),
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=cliutil.password_env(),
    )
    tail: asyncio.subprocess.Process | None = None
    try:
        assert serve.stdin is not None and serve.stderr is not None
        line = await asyncio.wait_for(serve.stderr.readline(), WAIT)
        assert b"soup serve: session" in line, line
        line = await asyncio.wait_for(serve.stderr.readline(), WAIT)
        url = f"http://{HOST}:{serve_metrics_port}"
        assert line.decode() == f"soup serve: metrics on {url}/metrics, health check on {url}/healthz\n"
        serve_address, tail_address = (HOST, serve_metrics_port), (HOST, tail_metrics_port)
        tail = await asyncio.create_subprocess_exec(
            *soup_command("tail", f"{HOST}:{port}", "--user", "u"),
            *("--metrics", f"{HOST}:{tail_metrics_port}"),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=cliutil.password_env(),
        )
        assert tail.stdout is not None
        sent = 0
        for _ in range(3):
            serve.stdin.write(b"".join(b"line %d\n" % n for n in range(sent + 1, sent + 101)))
            await serve.stdin.drain()
            sent += 100
            for n in range(sent - 99, sent + 1):
                printed = await asyncio.wait_for(tail.stdout.readline(), WAIT)
                assert printed.rstrip(b"\n").endswith(b"line %d" % n), printed
            samples = await scrape(serve_address)
            assert value(samples, "soup_messages_stored", session="SESSION") == sent
            assert value(samples, "soup_messages_sent_total", session="SESSION") == sent
            assert value(samples, "soup_clients", session="SESSION") == 1
            assert value(samples, "soup_logins_total", result="accepted", session="SESSION") == 1
            samples = await scrape(tail_address)
            assert value(samples, "soup_subscriber_connected", session="SESSION") == 1
            assert value(samples, "soup_subscriber_messages_total", session="SESSION") == sent
            assert value(samples, "soup_subscriber_next_sequence", session="SESSION") == sent + 1
            for address in (serve_address, tail_address):
                status, _, body = await http_get(address, "/healthz")
                assert status == 200, body
    finally:
        for process in (tail, serve):
            if process is not None and process.returncode is None:
                process.send_signal(signal.SIGTERM)
                await asyncio.wait_for(process.wait(), WAIT)


def test_soup_record_is_scraped_while_messages_flow_and_stops_on_ctrl_c(
    processes: cliutil.Processes, tmp_path: Path
) -> None:
    """``soup record --metrics 127.0.0.1:0`` of a ``soup serve --stdin`` feed: after each round
    is stored, the scrape says exactly what was sent (messages, bytes, next sequence); Ctrl-C
    stops it promptly though a scraper holds a connection, with everything stored."""
    feed = cliutil.Feed(processes, tmp_path / "feed.journal")
    journal = tmp_path / "copy.journal"
    record = processes.start(
        "record", feed.address, "--journal", str(journal), "--user", "u",
        "--metrics", f"{HOST}:0", env=cliutil.password_env(),
    )  # fmt: skip
    address = metrics_address(record)
    rng = random.Random(18)
    for _ in range(3):
        feed.publish(cliutil.make_payloads(500, rng))
        sent = len(feed.published)
        cliutil.wait_until(
            lambda: cliutil.stored_count(journal) >= len(feed.published), f"{sent} recorded", record
        )
        samples = scrape_sync(address)
        assert value(samples, "soup_subscriber_connected", session="FEED") == 1
        assert value(samples, "soup_subscriber_messages_total", session="FEED") == sent
        assert value(samples, "soup_subscriber_next_sequence", session="FEED") == sent + 1
        assert value(samples, "soup_subscriber_bytes_total", session="FEED") == sum(map(len, feed.published))
        assert value(samples, "soup_subscriber_connects_total", session="FEED") == 1
        assert value(samples, "soup_subscriber_reconnects_total", session="FEED") == 0
        status, _, body = urllib_get(address, "/healthz")
        assert status == 200, body
        assert body == (
            f"ok: subscriber 'u' of session 'FEED': following from {feed.address}, next sequence {sent + 1}\n"
        )
    stops_cleanly(record, signal.SIGINT, address)
    assert cliutil.stored_count(journal) == len(feed.published)
    assert cliutil.cat_lines(journal, "--format", "hex") == cliutil.hex_lines(feed.published)


def test_soup_tail_serves_503_while_it_cannot_connect_and_stops_on_sigterm(
    processes: cliutil.Processes,
) -> None:
    tail = processes.start("tail", f"{HOST}:{free_port()}", "--metrics", f"{HOST}:0")
    address = metrics_address(tail)
    tail.wait_stderr("connection refused")
    status, _, body = urllib_get(address, "/healthz")
    assert (status, body) == (503, "unavailable: subscriber '' of session '': not logged in yet\n")
    assert value(scrape_sync(address), "soup_subscriber_connected", session="") == 0
    stops_cleanly(tail, signal.SIGTERM, address)


def test_soup_relay_serves_its_upstream_and_downstream_sides_on_one_endpoint(
    processes: cliutil.Processes, tmp_path: Path
) -> None:
    """``soup relay --metrics``: the upstream subscriber and the downstream server on one
    endpoint, checked against what the feed sent and what a downstream ``soup tail`` printed."""
    feed = cliutil.Feed(processes, tmp_path / "feed.journal")
    feed.publish(cliutil.make_payloads(1000, random.Random(7)))
    relay = processes.start(
        "relay", feed.address, "--upstream-user", "u",
        "--journal", str(tmp_path / "relay.journal"), "--listen", f"{HOST}:0", "--metrics", f"{HOST}:0",
        env=cliutil.password_env(upstream="p"),
    )  # fmt: skip
    address = metrics_address(relay)
    downstream = relay.wait_stderr(r"-> ([\d.]+:\d+), session 'FEED'").group(1)
    lines = cliutil.tail_lines(downstream, "--count", "1000", "--format", "hex")
    assert lines == cliutil.hex_lines(feed.published)
    samples = scrape_sync(address)
    assert value(samples, "soup_subscriber_next_sequence", session="FEED") == 1001
    assert value(samples, "soup_subscriber_messages_total", session="FEED") == 1000
    assert value(samples, "soup_messages_stored", session="FEED") == 1000
    assert value(samples, "soup_messages_sent_total", session="FEED") == 1000
    assert value(samples, "soup_logins_total", result="accepted", session="FEED") == 1
    assert value(samples, "soup_server_listening", session="FEED") == 1
    status, _, body = urllib_get(address, "/healthz")
    assert status == 200 and body.startswith("ok: serving session 'FEED' on "), body
    assert "; subscriber 'u' of session 'FEED': following" in body, body
    stops_cleanly(relay, signal.SIGTERM, address)


@pytest.mark.nats
def test_soup_serve_from_jetstream_reports_the_gateway(processes: cliutil.Processes, tmp_path: Path) -> None:
    """``soup serve --store nats://... --metrics``: the gateway's upstream metrics next to the
    server's, for a stream ``soup publish`` wrote."""
    from netutil import NatsServer

    nats_server = NatsServer(tmp_path, "n0")
    nats_server.start()
    try:
        store = f"{nats_server.url}/FEED"
        published = cliutil.soup(
            "publish", "--store", store, input=b"".join(b"m%d\n" % n for n in range(250))
        )
        assert published.returncode == 0, published.stderr
        gateway = processes.start(
            "serve", "--store", store, "--listen", f"{HOST}:0", "--metrics", f"{HOST}:0"
        )
        gateway.wait_stderr(r"soup serve: session 'FEED' on ")
        address = metrics_address(gateway)
        samples: Samples = {}

        def caught_up() -> bool:
            nonlocal samples
            samples = scrape_sync(address)
            return value(samples, "soup_gateway_upstream_last_sequence", session="FEED") == 250

        cliutil.wait_until(caught_up, "the gateway to mirror 250 messages", gateway)
        assert value(samples, "soup_gateway_upstream_connected", session="FEED") == 1
        assert value(samples, "soup_gateway_upstream_lag_messages", session="FEED") == 0
        assert value(samples, "soup_messages_stored", session="FEED") == 250
        status, _, body = urllib_get(address, "/healthz")
        assert status == 200 and "gateway of session 'FEED' (stream FEED): following upstream" in body, body
        stops_cleanly(gateway, signal.SIGTERM, address)
    finally:
        nats_server.kill()


@pytest.mark.nats
def test_a_gateway_waiting_for_jetstream_answers_503_with_the_reason(
    processes: cliutil.Processes, tmp_path: Path
) -> None:
    """``soup serve --store nats://... --metrics`` against a NATS server without JetStream (as
    while a cluster elects its leader, JetStream does not answer): the gateway keeps trying, and
    meanwhile ``/healthz`` answers 503 saying what it waits for and why, rather than refusing
    connections; SIGTERM still stops it at once."""
    port = free_port()
    log = (tmp_path / "nats.log").open("wb")
    plain = subprocess.Popen([nats_server_binary(), "-a", HOST, "-p", str(port)], stdout=log, stderr=log)
    try:
        cliutil.wait_until(lambda: can_connect((HOST, port)), "nats-server to listen")
        url = f"nats://{HOST}:{port}"
        gateway = processes.start(
            "serve", "--store", f"{url}/FEED", "--listen", f"{HOST}:0", "--metrics", f"{HOST}:0"
        )
        address = metrics_address(gateway)
        waiting = f"unavailable: waiting for JetStream stream 'FEED' at {url}"
        status, _, body = urllib_get(address, "/healthz")
        assert status == 503 and body.startswith(waiting), body
        gateway.wait_stderr("JetStream is not ready yet")
        status, _, body = urllib_get(address, "/healthz")
        assert (status, body) == (
            503,
            f"{waiting}: stream 'FEED': JetStream is not available: not enabled on the server,"
            " or no leader elected yet\n",
        )
        assert "soup serve: session" not in gateway.stderr(), gateway.stderr()
        stops_cleanly(gateway, signal.SIGTERM, address)
    finally:
        plain.kill()
        plain.wait()
        log.close()


def can_connect(address: tuple[str, int]) -> bool:
    try:
        socket.create_connection(address, timeout=0.2).close()
    except OSError:
        return False
    return True


# --------------------------------------------------------------------------- the soup command: mistakes


#: A ``sitecustomize`` that makes ``import prometheus_client`` fail as it does when it is not
#: installed, while the rest of the environment (the package, click, nats-py) stays as it is.
NO_PROMETHEUS = """
import sys

class NoPrometheus:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] == "prometheus_client":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, NoPrometheus())
"""


def no_prometheus_site(tmp_path: Path) -> Path:
    """A folder holding the :data:`NO_PROMETHEUS` ``sitecustomize``, to put on ``PYTHONPATH``."""
    site = tmp_path / "no-prometheus"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(NO_PROMETHEUS)
    return site


def run_cli_without_prometheus(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m nasdaq_protocols.soup.cli ARGS`` where ``prometheus_client`` cannot be imported."""
    paths = [str(no_prometheus_site(tmp_path)), *filter(None, [os.environ.get("PYTHONPATH")])]
    return subprocess.run(
        soup_command(*args),
        capture_output=True,
        text=True,
        timeout=WAIT,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(paths)},
    )


def test_the_wrapper_hides_prometheus_client_and_nothing_else(tmp_path: Path) -> None:
    """What the next test relies on: the import fails as it does when the package is missing, and
    without --metrics the command runs as usual (here: one failed connection, exit 1)."""
    site = no_prometheus_site(tmp_path)
    result = subprocess.run(
        [sys.executable, "-c", "import prometheus_client"],
        capture_output=True,
        text=True,
        timeout=WAIT,
        env={**os.environ, "PYTHONPATH": str(site)},
    )
    assert result.returncode == 1, result.stderr
    assert "ModuleNotFoundError: No module named 'prometheus_client'" in result.stderr, result.stderr
    result = run_cli_without_prometheus(tmp_path, "tail", f"{HOST}:{free_port()}", "--no-reconnect")
    assert result.returncode == 1, result.stderr
    assert cliutil.single_error_line(result.stderr).endswith("connection refused"), result.stderr


@pytest.mark.parametrize(
    "arguments",
    [
        ["serve", "--listen", f"{HOST}:0"],
        ["serve", "--store", f"nats://{HOST}:1/FEED", "--listen", f"{HOST}:0"],
        ["serve", "--journal", "JOURNAL", "--listen", f"{HOST}:0"],
        ["tail", f"{HOST}:1"],
        ["record", f"{HOST}:1", "--journal", "JOURNAL"],
        ["relay", f"{HOST}:1", "--journal", "JOURNAL", "--listen", f"{HOST}:0"],
    ],
    ids=["serve", "serve-jetstream", "serve-journal", "tail", "record", "relay"],
)
def test_metrics_without_the_extra_is_a_usage_error_that_says_how_to_install(
    tmp_path: Path, arguments: list[str]
) -> None:
    journal = tmp_path / "new.journal"
    arguments = [str(journal) if argument == "JOURNAL" else argument for argument in arguments]
    started = time.monotonic()
    result = run_cli_without_prometheus(tmp_path, *arguments, "--metrics", f"{HOST}:0")
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert errors == [
        f"Error: --metrics: metrics need prometheus_client, which is not installed: {INSTALL_HINT}"
    ]
    assert not journal.exists(), "a journal was created before the usage error"
    # Nothing was tried first: no NATS connection, no login retried (each would take seconds).
    assert time.monotonic() - started < WAIT / 3


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["serve", "--metrics", "nonsense"], "Invalid value for '--metrics': 'nonsense' is not HOST:PORT"),
        (["tail", ":1", "--metrics", ":70000"], "the port must be between 0 and 65535"),
        (["serve", "--listen", ":7000", "--metrics", "127.0.0.1:7000"], "is the address of --listen"),
        (["relay", ":1", "--journal", "j", "--metrics", ":7001"], "is the address of --listen"),
    ],
    ids=["not-an-address", "bad-port", "serve-same-as-listen", "relay-same-as-listen"],
)
def test_a_bad_metrics_address_is_a_usage_error(arguments: list[str], message: str) -> None:
    result = cliutil.soup(*arguments)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    (error,) = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert message in error, error


@pytest.mark.parametrize("command", ["serve", "tail", "record", "relay"])
def test_a_metrics_port_in_use_fails_at_once_leaving_nothing_behind(tmp_path: Path, command: str) -> None:
    journal = tmp_path / "new.journal"
    arguments = {
        "serve": ["serve", "--listen", f"{HOST}:0", "--journal", str(journal)],
        "tail": ["tail", f"{HOST}:{free_port()}"],
        "record": ["record", f"{HOST}:{free_port()}", "--journal", str(journal)],
        "relay": ["relay", f"{HOST}:{free_port()}", "--listen", f"{HOST}:0", "--journal", str(journal)],
    }[command]
    with socket.create_server((HOST, 0)) as taken:
        port = taken.getsockname()[1]
        result = cliutil.soup(*arguments, "--metrics", f"{HOST}:{port}")
    assert result.returncode == 1, result.stderr
    line = cliutil.single_error_line(result.stderr)
    assert line == f"soup: error: cannot listen on {HOST}:{port} (--metrics): Address already in use"
    assert not journal.exists()


def test_readme_example_prints_the_sample_scrape(tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    (example,) = [block for block in re.findall(r"```python\n(.*?)```", readme, re.S) if "metrics=(" in block]
    result = subprocess.run(
        [sys.executable, "-c", example], cwd=tmp_path, capture_output=True, text=True, timeout=WAIT
    )
    assert result.returncode == 0, result.stderr
    printed = result.stdout.splitlines()
    sample = readme[readme.index("It prints (the `# HELP`") :].split("```")[1].splitlines()
    shown = [line for line in sample if line.startswith("soup_")]
    assert shown and all(line in printed for line in shown), (
        "the README's sample scrape is not what it prints"
    )
    assert "200 ok: serving session 'FEED' on 127.0.0.1:" in result.stdout
