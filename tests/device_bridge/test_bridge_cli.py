"""`guidance keys generate` and `guidance controller-sim` as a user runs them; the bench function runs."""

from __future__ import annotations

import subprocess
import sys

import zmq.auth

from guidance.bench.bridge import run_bridge_bench


def cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "guidance.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_keys_generate_writes_loadable_pairs_and_refuses_to_overwrite(tmp_path):
    d = tmp_path / "keys"
    r = cli("keys", "generate", str(d))
    assert r.returncode == 0, r.stderr
    pub, sec = zmq.auth.load_certificate(d / "service.key_secret")
    assert zmq.auth.load_certificate(d / "service.key")[0] == pub and len(sec) == 40
    assert zmq.auth.load_certificate(d / "authorized_controllers" / "controller.key")[0] == \
        zmq.auth.load_certificate(d / "controller.key_secret")[0]
    assert (d / "controller.key_secret").stat().st_mode & 0o077 == 0
    before = (d / "service.key_secret").read_bytes()
    r = cli("keys", "generate", str(d))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert (d / "service.key_secret").read_bytes() == before


def test_keys_generate_names_controllers_adds_one_and_prints_fingerprints(tmp_path):
    d = tmp_path / "keys"
    r = cli("keys", "generate", str(d), "--controller", "hp-1", "--controller", "hp-2")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (d / "authorized_controllers").iterdir()) == ["hp-1.key", "hp-2.key"]
    for secret in d.glob("*.key_secret"):
        assert secret.stat().st_mode & 0o077 == 0, secret
    r = cli("keys", "add-controller", str(d), "hp-3")
    assert r.returncode == 0 and (d / "authorized_controllers" / "hp-3.key").is_file()
    assert (d / "hp-3.key_secret").stat().st_mode & 0o077 == 0
    r = cli("keys", "fingerprint", str(d / "hp-3.key"))
    pub = zmq.auth.load_certificate(d / "hp-3.key")[0]
    assert r.returncode == 0 and r.stdout.split("\t")[0] == pub[:8].decode()
    for bad in (("keys", "add-controller", str(d), "hp 4"), ("keys", "generate", str(tmp_path / "k2"), "--controller",
                                                            "a/b")):
        r = cli(*bad)
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


def test_key_files_that_would_fail_silently_are_one_line_errors(tmp_path):
    """Issue 14 item 5: a secret readable by others, or one character changed, is refused by the loaders."""
    d = tmp_path / "keys"
    cli("keys", "generate", str(d))
    (d / "controller.key_secret").chmod(0o644)
    r = cli("controller-sim", "--connect", "tcp://127.0.0.1:5999", "--keys", str(d), "--duration-s", "0.1")
    assert r.returncode == 2 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert "controller.key_secret: readable by others (chmod 600)" in r.stderr
    (d / "controller.key_secret").chmod(0o600)
    text = (d / "controller.key_secret").read_text()
    key = text.split('secret-key = "')[1][:40]
    (d / "controller.key_secret").write_text(text.replace(key, key[:10] + ("x" if key[10] != "x" else "y") + key[11:]))
    r = cli("controller-sim", "--connect", "tcp://127.0.0.1:5999", "--keys", str(d), "--duration-s", "0.1")
    assert r.returncode == 2 and "controller.key_secret: secret-key:" in r.stderr and "Traceback" not in r.stderr


def test_controller_sim_user_errors_are_one_line(tmp_path):
    cases = [
        ("controller-sim", "--connect", "tcp://127.0.0.1:5999"),  # no keys, not insecure
        ("controller-sim", "--connect", "tcp://127.0.0.1:5999", "--keys", str(tmp_path / "nope")),
        ("controller-sim", "--connect", "tcp://127.0.0.1:5999", "--insecure", "--schedule", "x"),
        ("controller-sim", "--connect", "ipc:///tmp/x", "--insecure"),  # no report endpoint derivable
        ("controller-sim", "--connect", "tcp://127.0.0.1:5999", "--insecure", "--rate-hz", "0"),
    ]
    (tmp_path / "bad.key_secret").write_text("garbage")
    cases.append(("controller-sim", "--connect", "tcp://127.0.0.1:5999", "--server-key", str(tmp_path / "bad.key_secret"),
                  "--key", str(tmp_path / "bad.key_secret")))
    cases += [
        ("controller-sim", "--connect", "tcp://127.0.0.1:5999", "--insecure", "--rate-hz", "500"),  # over the limit
        ("controller-sim", "--connect", "tcp://127.0.0.1:5999", "--insecure", "--id", "bad id"),
        ("controller-sim", "--connect", "tcp://127.0.0.1:5999", "--insecure", "--contact-truth", str(tmp_path)),
        ("controller-sim", "--connect", "tcp://127.0.0.1:5999", "--insecure", "--contact-truth", str(tmp_path),
         "--t0-ns", "1"),  # not a simulation folder
    ]
    for args in cases:
        r = cli(*args)
        assert r.returncode == 2, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr, r.stderr


def test_bridge_bench_reports_latency_and_gate_costs():
    r = run_bridge_bench(n=200, curve=True, pace_us=200)
    assert r["curve"] is True and r["sent"] == 200 and r["received"] > 100
    assert 0 < r["latency_median_ms"] <= r["latency_p99_ms"]
    assert 0 < r["controller_gate_median_us"] <= r["controller_gate_p99_us"]
    assert 0 < r["service_gate_median_us"] <= r["service_gate_p99_us"]


def test_controller_sim_loop_never_spins():
    """docs/protocol.md §9 (gap G19): a due but refused pulse waits for a permit (up to 5 ms), never poll(0)."""
    from guidance.commands.controller_sim import loop_wait_ms

    ms = 1_000_000
    now = 1_000 * ms
    assert loop_wait_ms(now, next_pulse_ns=now - 300 * ms, next_status_ns=now + 80 * ms) == 5  # due, refused: 5 ms
    assert loop_wait_ms(now, next_pulse_ns=now, next_status_ns=now + 80 * ms) == 5
    assert loop_wait_ms(now, next_pulse_ns=now + 2 * ms, next_status_ns=now + 80 * ms) == 2
    assert loop_wait_ms(now, next_pulse_ns=now + 300_000, next_status_ns=now + 80 * ms) == 1  # rounded up, not 0
    assert loop_wait_ms(now, next_pulse_ns=now - ms, next_status_ns=now + 300_000) == 1
    assert loop_wait_ms(now, next_pulse_ns=now - ms, next_status_ns=now - 1) == 0  # a status is due: send it now
