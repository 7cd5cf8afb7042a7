"""The CLI as a user runs it: real processes, real ports, exit codes and output."""

from __future__ import annotations

import contextlib
import json
import os
import pty
import re
import select
import signal
import socket
import subprocess
import time

import httpx
import pytest

from fixtures.processes import CHAIN429, free_port, run, serving, stop, wait_healthy
from fixtures.servers import COMPAT_CONFIG, COMPAT_CONFIGS

COMPAT_KEY = "your-proxy-api-key-here"


BAD = """\
version: 1
settings:
  port: "abc"
providers:
  - id: a
    type: groq
chains:
  - name: c
    entries:
      - provider: missing
        model: m
"""


def test_version():
    result = run("--version")
    assert result.returncode == 0
    from chain429 import __version__

    assert result.stdout.strip() == f"chain429 {__version__}"


@pytest.mark.parametrize("path", COMPAT_CONFIGS, ids=lambda path: path.name)
def test_validate_accepts_429chain_configs_unchanged(path):
    result = run("validate", str(path))
    assert (result.returncode, result.stdout.strip()) == (0, "ok")


def test_validate_names_file_line_and_field(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(BAD)
    result = run("validate", str(path))
    assert result.returncode == 1
    lines = result.stdout.strip().splitlines()
    assert f"{path}:3: settings.port:" in lines[0]
    assert f"{path}:10: chains[0].entries[0].provider:" in lines[1]
    assert "Traceback" not in result.stdout + result.stderr


def test_validate_json(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(BAD)
    data = json.loads(run("validate", str(path), "--json").stdout)
    assert data["valid"] is False
    assert [(e["line"], e["path"]) for e in data["errors"]] == [
        (3, "settings.port"),
        (10, "chains[0].entries[0].provider"),
    ]


def test_validate_finds_config_from_environment(tmp_path):
    for variable in ("CHAIN429_CONFIG", "CONFIG_PATH"):
        result = run("validate", env={variable: str(COMPAT_CONFIG)}, cwd=tmp_path)
        assert (result.returncode, result.stdout.strip()) == (0, "ok"), variable


def test_validate_finds_chain429_yaml_in_the_working_directory(tmp_path):
    (tmp_path / "chain429.yaml").write_text(BAD)
    env = {"CHAIN429_CONFIG": "", "CONFIG_PATH": ""}
    result = run("validate", env=env, cwd=tmp_path)
    assert result.returncode == 1
    assert "chain429.yaml:3: settings.port" in result.stdout


def test_serve_runs_a_429chain_config_and_stops_on_ctrl_c(tmp_path):
    port = free_port()
    proc = subprocess.Popen(
        [*CHAIN429, "serve", "--config", str(COMPAT_CONFIG), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,  # its dbPath is relative, as 429chain's are
    )
    try:
        url = f"http://127.0.0.1:{port}"
        assert wait_healthy(url, proc)["status"] == "ok"
        models = httpx.get(
            f"{url}/v1/models", headers={"authorization": f"Bearer {COMPAT_KEY}"}
        ).json()
        assert [m["id"] for m in models["data"]][:2] == ["default", "fast"]
    finally:
        assert stop(proc) == 0
    assert (tmp_path / "429chain.db").exists()  # 429chain's dbPath holds the request log


ONE_CHAIN = (
    "version: 1\nsettings:\n  apiKeys: [k]\nproviders:\n  - id: a\n    type: groq\n"
    "chains:\n  - name: c\n    entries:\n      - {provider: a, model: m}\n"
)


def test_serve_takes_port_from_PORT_and_flag_wins(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(ONE_CHAIN)
    env_port, flag_port = free_port(), free_port()
    with serving("-c", str(path), env={"PORT": str(env_port)}) as proc:
        wait_healthy(f"http://127.0.0.1:{env_port}", proc)
    with serving("-c", str(path), "--port", str(flag_port), env={"PORT": str(env_port)}) as proc:
        wait_healthy(f"http://127.0.0.1:{flag_port}", proc)


def test_serve_without_keys_says_it_is_open_on_loopback(tmp_path):
    path = tmp_path / "open.yaml"
    path.write_text(ONE_CHAIN.replace("  apiKeys: [k]\n", ""))
    port = free_port()
    with serving("-c", str(path), "--port", str(port)) as proc:
        wait_healthy(f"http://127.0.0.1:{port}", proc)
        assert httpx.get(f"http://127.0.0.1:{port}/v1/models").status_code == 200
    assert "serving without authentication on 127.0.0.1" in proc.stderr.read()


def test_serve_logs_json_lines_when_asked(tmp_path):
    path = tmp_path / "open.yaml"
    path.write_text(ONE_CHAIN.replace("  apiKeys: [k]\n", "  logFormat: json\n"))
    port = free_port()
    with serving("-c", str(path), "--port", str(port)) as proc:
        wait_healthy(f"http://127.0.0.1:{port}", proc)
    lines = [json.loads(line) for line in proc.stderr.read().splitlines() if line.startswith("{")]
    warning = [line for line in lines if "without authentication" in line["message"]]
    assert warning and warning[0]["level"] == "warning"


def test_sighup_reloads_the_config_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(ONE_CHAIN)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with serving("-c", str(path), "--port", str(port)) as proc:
        assert wait_healthy(url, proc)["config_generation"] == 1
        # Same inode, size and mtime: only the signal can tell the server to look again.
        before = path.stat()
        path.write_text(ONE_CHAIN.replace("model: m}", "model: n}"))
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
        time.sleep(1.0)  # longer than the watcher's poll: it must not have noticed
        assert httpx.get(f"{url}/health").json()["config_generation"] == 1
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if httpx.get(f"{url}/health").json()["config_generation"] == 2:
                break
            time.sleep(0.05)
        models = httpx.get(f"{url}/v1/models", headers={"authorization": "Bearer k"}).json()
        assert [m["id"] for m in models["data"]] == ["c", "n"]
    assert "proxy keys may read the admin API and stats but not change the config" in (
        proc.stderr.read()
    )


def test_serve_without_keys_refuses_a_public_host(tmp_path):
    path = tmp_path / "open.yaml"
    path.write_text(
        "version: 1\nproviders:\n  - id: a\n    type: groq\n"
        "chains:\n  - name: c\n    entries:\n      - {provider: a, model: m}\n"
    )
    result = run("serve", "-c", str(path), "--host", "0.0.0.0", "--port", str(free_port()))
    assert result.returncode == 2
    assert "refusing to serve on 0.0.0.0 without settings.apiKeys" in result.stderr


def test_serve_reports_a_bad_config_and_exits_2(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(BAD)
    result = run("serve", "-c", str(path))
    assert result.returncode == 2
    assert f"{path}:3: settings.port" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_reports_a_missing_config(tmp_path):
    result = run("serve", "-c", str(tmp_path / "nope.yaml"))
    assert result.returncode == 2
    assert "nope.yaml" in result.stderr
    assert "Traceback" not in result.stderr


def test_demo_once_shows_the_waterfall():
    result = run("demo", "--once", "--port", str(free_port()), timeout=60)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "X-429chain-Trace: alpha/fast-8b=429,beta/steady-8b=200" in out
    assert "X-429chain-Trace: alpha/fast-8b=skip:cooldown,beta/steady-8b=200" in out
    assert "chain429-demo-key" in out


def test_serve_bounds_client_connections(tmp_path):
    """`chain429 serve` runs the guarded protocol: the cap and the header deadline hold."""
    path = tmp_path / "c.yaml"
    limits = "  apiKeys: [k]\n  maxConnections: 2\n  clientHeaderTimeoutMs: 600\n"
    path.write_text(ONE_CHAIN.replace("  apiKeys: [k]\n", limits))
    port = free_port()
    with serving("-c", str(path), "--port", str(port)) as proc:
        wait_healthy(f"http://127.0.0.1:{port}", proc)
        time.sleep(0.2)  # the health check's connection is closed by now
        held = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(2)]
        opened = time.monotonic()
        with socket.create_connection(("127.0.0.1", port), timeout=5) as refused:
            assert refused.recv(65536).startswith(b"HTTP/1.1 503 ")
        for sock in held:  # silent connections end at the header deadline
            with sock:
                assert sock.recv(65536) == b""
        assert 0.5 <= time.monotonic() - opened <= 2.0
        wait_healthy(f"http://127.0.0.1:{port}", proc)
    assert "connection limit reached: 2 connections open" in proc.stderr.read()


def test_serve_fits_max_connections_to_the_open_file_limit(tmp_path):
    """With `ulimit -n 200`, 1024 connections cannot all be open: the cap becomes (200-64)/2."""
    path = tmp_path / "c.yaml"
    path.write_text(ONE_CHAIN)
    port = free_port()
    limited = ["sh", "-c", 'ulimit -n 200 && exec "$@"', "sh"]
    proc = subprocess.Popen(
        [*limited, *CHAIN429, "serve", "-c", str(path), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    held: list[socket.socket] = []
    try:
        wait_healthy(f"http://127.0.0.1:{port}", proc)
        time.sleep(0.2)  # the health check's connection is closed by now
        held = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(68)]
        with socket.create_connection(("127.0.0.1", port), timeout=5) as refused:
            assert refused.recv(65536).startswith(b"HTTP/1.1 503 ")
    finally:
        for sock in held:
            sock.close()
        stop(proc)
    assert (
        "settings.maxConnections is 1024 but the open-file limit allows 68 connections"
        in proc.stderr.read()
    )


# -- the small things a user notices --------------------------------------------------------


def test_serve_says_serving_only_once_it_listens(tmp_path):
    """The line names the real port (0 picks one) and a client can connect the moment it shows."""
    path = tmp_path / "c.yaml"
    path.write_text(ONE_CHAIN)
    with serving("-c", str(path), "--port", "0") as proc:
        assert proc.stderr is not None
        deadline = time.monotonic() + 15
        line = ""
        while "serving" not in line and time.monotonic() < deadline:
            ready, _, _ = select.select([proc.stderr], [], [], 0.2)
            line = proc.stderr.readline() if ready else line
        assert "serving" in line, "no serving line"
        port = int(re.search(r"http://127\.0\.0\.1:(\d+)/v1", line)[1])
        assert port != 0
        socket.create_connection(("127.0.0.1", port), timeout=2).close()  # not refused
        assert httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200


@pytest.mark.parametrize("command", ["serve", "demo"])
def test_a_port_in_use_is_one_line_naming_the_flag(tmp_path, command):
    path = tmp_path / "c.yaml"
    path.write_text(ONE_CHAIN)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        args = ["-c", str(path)] if command == "serve" else ["--once"]
        result = run(command, *args, "--port", str(port), timeout=60)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == f"error: port {port} is in use; pick another with --port\n"


def on_a_terminal(args: list[str], until: str | None = None, timeout: float = 15) -> str:
    """What the CLI prints with a terminal for stdin, stdout and stderr: until `until`
    shows (then Ctrl-C), or until it exits."""
    main, child = pty.openpty()
    proc = subprocess.Popen([*CHAIN429, *args], stdin=child, stdout=child, stderr=child)
    os.close(child)
    out = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and not (until and until.encode() in out):
            if select.select([main], [], [], 0.2)[0]:
                try:
                    out += os.read(main, 65536)
                except OSError:  # the child has closed the terminal: it has exited
                    break
        if until is not None:
            stop(proc)
            with contextlib.suppress(OSError):
                while select.select([main], [], [], 1)[0] and (chunk := os.read(main, 65536)):
                    out += chunk
        assert proc.wait(timeout=10) is not None
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(main)
    return out.decode(errors="replace")


def test_no_sanic_banner_nor_its_debug_hint_on_a_terminal(tmp_path):
    path = tmp_path / "c.yaml"
    own_log = f"  apiKeys: [k]\n  dbPath: {tmp_path}/log.db\n"
    path.write_text(ONE_CHAIN.replace("  apiKeys: [k]\n", own_log))
    port = free_port()
    served = on_a_terminal(["serve", "-c", str(path), "--port", str(port)], until="serving")
    assert f"serving {path} on http://127.0.0.1:{port}/v1" in served
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        refused = on_a_terminal(["serve", "-c", str(path), "--port", str(busy)])
    assert f"port {busy} is in use; pick another with --port" in refused
    for output in (served, refused):
        for sanic in ("--debug", "--dev", "PRODUCTION", "Sanic v", "Goin' Fast", "Traceback"):
            assert sanic not in output, (sanic, output)


def test_help_shows_flags_without_a_type_and_usage_errors_as_one_line(tmp_path):
    shown = run("--help", env={"COLUMNS": "100"}).stdout
    assert re.search(r"--version +Print the version", shown) and "<bool>" not in shown
    wrong = run("validate", "--nope")
    assert wrong.returncode == 2 and wrong.stdout == ""
    assert wrong.stderr == "error: no such option: --nope (see `chain429 validate --help`)\n"
    bad = run("chain", "move", "c", "a:m", "--to", "0")
    assert bad.returncode == 2 and bad.stderr.startswith("error: invalid value for '--to'")
    assert len(bad.stderr.splitlines()) == 1


def test_every_command_that_reads_the_config_takes_config(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(BAD)
    for flag in ("--config", "-c"):
        result = run("validate", flag, str(path))
        assert result.returncode == 1 and f"{path}:3: settings.port" in result.stdout
    good = tmp_path / "good.yaml"
    good.write_text(ONE_CHAIN)
    assert run("validate", "--config", str(good)).stdout == "ok\n"
    from typer.main import get_command

    from chain429.cli.main import app

    def commands(group, prefix=()):
        for name, command in group.commands.items():
            if hasattr(command, "commands"):
                yield from commands(command, (*prefix, name))
            else:
                yield (*prefix, name), {o for p in command.params for o in getattr(p, "opts", [])}

    reads_no_config = {"context", "demo", "fake"}
    describes_any_config = ("config", "schema")  # the schema of every config file; reads none
    for path_, options in commands(get_command(app)):
        if path_[0] not in reads_no_config and path_ != describes_any_config:
            assert "--config" in options, path_
