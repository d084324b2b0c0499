"""threads=0 on a shared machine: the governor's decisions from synthetic /proc/stat readings (no
timing): the cores other work leaves free, changes only after two agreeing checks, one slowdown
warning, and nothing at all for threads=N, on CUDA or when turned off."""

from __future__ import annotations

import pytest
import torch

from ganforge.speed.cpu import ThreadGovernor, choose_threads, cpu_ticks, others_busy

HZ = 100


def stat(busy: int, idle: int, cpus: int = 2) -> str:
    """/proc/stat text whose machine line has `busy` user ticks and `idle` idle ticks."""
    lines = [f"cpu  {busy} 0 0 {idle} 0 0 0 0 0 0"]
    lines += [f"cpu{k} 1 0 0 1 0 0 0 0 0 0" for k in range(cpus)]
    return "\n".join(lines + ["intr 12 0", "ctxt 99", "procs_running 3"]) + "\n"


def test_cpu_ticks_reads_the_machine_line():
    text = "cpu  10 2 3 40 5 1 1 0 0 0\ncpu0 5 1 1 20 2 0 0 0 0 0\ncpu1 5 1 2 20 3 1 1 0 0 0\nintr 1\n"
    assert cpu_ticks(text) == (17, 62, 2)  # busy: all but idle and iowait


def test_others_busy_subtracts_this_process():
    before, after = cpu_ticks(stat(0, 0)), cpu_ticks(stat(150, 50))  # 1 s of 2 CPUs: 1.5 CPU-s busy
    assert others_busy(before, after, own_seconds=0.5, tick_hz=HZ) == pytest.approx(1.0)
    assert others_busy(before, after, own_seconds=1.5, tick_hz=HZ) == pytest.approx(0.0)
    assert others_busy(before, after, own_seconds=2.0, tick_hz=HZ) == 0.0  # never negative


@pytest.mark.parametrize("cores,busy,threads", [
    (2, 0.0, 2), (2, 0.2, 2), (2, 0.3, 1), (2, 1.0, 1), (2, 5.0, 1),
    (8, 0.0, 8), (8, 2.0, 6), (8, 2.5, 5), (8, 2.2, 6), (1, 0.0, 1),
])
def test_choose_threads_counts_the_free_cores(cores, busy, threads):
    assert choose_threads(cores, busy) == threads


class Rows:
    def __init__(self):
        self.rows = []

    def event(self, step, name, **fields):
        self.rows.append(("event", step, name, fields))

    def warning(self, step, message, **fields):
        self.rows.append(("warning", step, message, fields))


class Machine:
    """Successive readings: (machine busy ticks, idle ticks, this process's CPU seconds); a clock
    that moves on 10 s per reading, past the governor's re-check interval."""

    def __init__(self):
        self.busy = self.idle = 0
        self.own = 0.0
        self.now = 0.0

    def run(self, others: float, own: float, seconds: float = 10.0) -> None:
        """`seconds` of wall time in which other work used `others` cores and this process `own`."""
        self.busy += round((others + own) * seconds * HZ)
        self.idle += round(max(0.0, 2 - others - own) * seconds * HZ)
        self.own += own * seconds
        self.now += seconds

    def read(self):
        return stat(self.busy, self.idle), self.own


class Win:
    def __init__(self, ips: float, count: int = 5):
        self.ips, self.count = ips, count

    def images_per_second(self) -> float:
        return self.ips


@pytest.fixture
def governed(monkeypatch):
    monkeypatch.delenv("GANFORGE_THREAD_GOVERNOR", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setattr("ganforge.speed.cpu.cores", lambda: 2)
    previous = torch.get_num_threads()
    torch.set_num_threads(2)  # what threads=0 set before the governor looks
    yield
    torch.set_num_threads(previous)


def governor(machine: Machine, start_busy: float, threads: int = 0, device: str = "cpu"):
    rows, lines = Rows(), []
    readings = iter([None])  # the first reading is before the settle window, the second after it

    def read():
        if next(readings, "later") is None:
            reading = machine.read()
            machine.run(start_busy, 0.0, seconds=0.25)
            return reading
        return machine.read()
    gov = ThreadGovernor(threads, torch.device(device), rows, lines.append, 0, read=read,
                         clock=lambda: machine.now, settle=0)
    return gov, rows, lines


def test_a_busy_neighbour_at_start_means_one_thread(governed):
    gov, rows, _ = governor(Machine(), start_busy=1.0)
    assert gov.active and gov.threads == 1 and torch.get_num_threads() == 1
    assert rows.rows == [("event", 0, "threads", {"threads": 1, "previous": 2, "cores": 2,
                                                  "busy_elsewhere": 1.0})]


def test_an_idle_machine_keeps_every_core_and_writes_nothing(governed):
    gov, rows, _ = governor(Machine(), start_busy=0.0)
    assert gov.threads == 2 and torch.get_num_threads() == 2 and rows.rows == []


def test_a_change_needs_two_agreeing_checks(governed):
    machine = Machine()
    gov, rows, _ = governor(machine, start_busy=0.0)
    machine.run(others=1.0, own=1.0)  # a neighbour arrives
    gov.check(100, Win(500))
    assert gov.threads == 2 and rows.rows == []  # one window could be a passing burst
    machine.run(others=1.0, own=1.0)
    gov.check(200, Win(500))
    assert gov.threads == 1 and torch.get_num_threads() == 1
    assert rows.rows[-1][:3] == ("event", 200, "threads")
    machine.run(others=0.0, own=1.0)  # it leaves: back to both cores, again after two checks
    gov.check(300, Win(500))
    machine.run(others=1.0, own=1.0)  # ... but it came back: the pending change is dropped
    gov.check(400, Win(500))
    machine.run(others=0.0, own=1.0)
    gov.check(500, Win(500))
    assert gov.threads == 1
    machine.run(others=0.0, own=1.0)
    gov.check(600, Win(500))
    assert gov.threads == 2 and rows.rows[-1][3]["previous"] == 1


def test_checks_closer_than_the_recheck_interval_keep_measuring(governed):
    machine = Machine()
    gov, rows, _ = governor(machine, start_busy=0.0)
    for step in range(1, 11):  # 5 s in 0.5 s windows
        machine.run(others=1.0, own=1.0, seconds=0.5)
        gov.check(step, Win(500))
    assert gov.threads == 1  # two 2 s windows measured across the short ones


def test_one_warning_when_images_per_second_halves(governed):
    machine = Machine()
    gov, rows, lines = governor(machine, start_busy=0.0)
    for step, ips in enumerate([50, 400, 180, 380, 150, 90, 400, 60, 50], start=1):
        machine.run(others=0.0, own=2.0)
        gov.check(step * 10, Win(ips))
    warnings = [r for r in rows.rows if r[0] == "warning"]
    # 180 alone is a hiccup; 150 then 90 (< 400 / 2) warn, once; the first window is start-up
    assert len(warnings) == 1 and warnings[0][1] == 60 and warnings[0][3] == {"alarm": "slow"}
    assert len(lines) == 1 and "threads=1" in lines[0] and "90 images/s" in lines[0]


@pytest.mark.parametrize("threads,device,env", [(1, "cpu", None), (2, "cpu", None), (0, "cuda", None),
                                                 (0, "cpu", "off")])
def test_inactive_when_threads_are_given_on_cuda_or_off(governed, monkeypatch, threads, device, env):
    if env:
        monkeypatch.setenv("GANFORGE_THREAD_GOVERNOR", env)
    machine = Machine()
    gov, rows, lines = governor(machine, start_busy=2.0, threads=threads, device=device)
    for step, ips in enumerate([400, 400, 10, 10], start=1):
        machine.run(others=2.0, own=1.0)
        gov.check(step, Win(ips))
    assert not gov.active and torch.get_num_threads() == 2 and rows.rows == [] and lines == []


def test_inactive_under_torchrun(governed, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    gov, rows, _ = governor(Machine(), start_busy=2.0)
    assert not gov.active and rows.rows == []


def test_openmp_threads_sleep_unless_the_user_chose():
    """Importing ganforge before torch makes idle OpenMP threads sleep (libgomp reads the variable
    when torch loads it); a wait policy the user set is kept."""
    import os
    import subprocess
    import sys

    code = "import ganforge, os, torch; print(os.environ['OMP_WAIT_POLICY'])"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "PASSIVE"
    out = subprocess.run([sys.executable, "-c", code], env={**env, "OMP_WAIT_POLICY": "ACTIVE"},
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ACTIVE"


def test_the_runs_own_worker_processes_are_not_a_neighbour():
    # A DataLoader worker is the run's own work: its CPU time counts as this process's, so the
    # governor does not give up a core to it (it did: a detector run with one augmentation
    # worker dropped to one thread). Measured in CPU time, not wall time.
    import subprocess
    import sys
    import time

    from ganforge.speed.cpu import own_cpu_seconds

    start_own, start_self = own_cpu_seconds(), time.process_time()
    child = subprocess.Popen([sys.executable, "-c", "import time\nt = time.process_time()\n"
                              "while time.process_time() - t < 0.5: pass\nimport sys; sys.stdin.read()"],
                             stdin=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while own_cpu_seconds() - start_own - (time.process_time() - start_self) < 0.4:  # counted while alive
            assert child.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        child.communicate(b"")
    assert own_cpu_seconds() - start_own - (time.process_time() - start_self) >= 0.4  # and after it ended
