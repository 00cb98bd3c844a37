"""The Makefile's own promises to contributors: `make help` lists every target, and `make check` is
the short loop (build, unit, black-box), leaving the sanitizer pass, k8s, the bench and the fuzzers
to `make test`."""

import re
import subprocess

from conftest import REPO


def make(*args):
    p = subprocess.run(
        ["make", "--no-print-directory", *args],
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 0, p.stderr
    return p.stdout


def phony_targets():
    """Every target named in .PHONY (continuation lines included)."""
    text = (REPO / "Makefile").read_text()
    m = re.search(r"^\.PHONY:((?:[^\n]*\\\n)*[^\n]*)", text, re.M)
    assert m, "the Makefile has no .PHONY line"
    return set(m.group(1).replace("\\\n", " ").split())


def test_help_lists_every_target_with_one_line_each():
    lines = make("help").splitlines()
    listed = {}
    for line in lines:
        m = re.fullmatch(r"  make (\S+) +(\S.*)", line)
        assert m, f"not a target line: {line!r}"
        assert m.group(1) not in listed, f"{m.group(1)} listed twice"
        listed[m.group(1)] = m.group(2)
    assert set(listed) == phony_targets()


def test_check_runs_no_sanitizer_k8s_bench_or_fuzz_step():
    # -n prints the recipes without running them; the sub-makes print theirs too (make -n runs
    # recipes that invoke $(MAKE)), so what check would ever do is in this text.
    plan = make("-n", "check")
    assert "unit integration" in plan, plan
    for step in ("SAN=1", "k8s-test", "bench-smoke", "fuzz", "tests/k8s"):
        assert step not in plan, f"make check would run {step}:\n{plan}"


def test_test_runs_what_check_runs_and_the_rest():
    plan = make("-n", "test")
    for step in ("unit integration bench-smoke k8s-test fuzz-regress", "SAN=1"):
        assert step in plan, f"make test would not run {step}:\n{plan}"
