"""The reply core under AddressSanitizer and UBSan: a driver over
adversarial inputs, and a bounded libFuzzer run, with every reply then
paced (timing and limits configured, tests/c/chains.h); the unit tests of
pacing itself (tests/c/pace_test.c); and the table check, one broken
invariant at a time (tests/c/table_check.c). All are compiled from csrc/ into a
temporary directory with buffers sized exactly, so any read or write
outside the packet and its headroom, or outside a pool slot, aborts.

RC_FUZZ_SECONDS lengthens the libFuzzer run (default 20)."""

from __future__ import annotations

import dataclasses
import os
import random
import shutil
import subprocess
from pathlib import Path

import pytest

from probes import random_probe
from routechain.chain import Chapter
from routechain.chaintable import Kind
from test_reply import CHAIN4, CHAIN6, CHAINS, PARAMS
from test_reply_ext import EXT4, EXT6

ROOT = Path(__file__).resolve().parent.parent
CSRC = ROOT / "csrc"
DRIVERS = Path(__file__).resolve().parent / "c"
FUZZ_SECONDS = int(os.environ.get("RC_FUZZ_SECONDS", "20"))
SANITIZE = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all"]
# Everything of the core but the serving loop (serve.c: system calls).
CORE = ["reply.c", "table.c", "pace.c", "book.c", "pool.c"]


def clang() -> str:
    """clang, or skip (fail under CI=true, where it must be installed)."""
    found = shutil.which("clang")
    if found is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("clang is not installed (apt: clang libclang-rt-14-dev)", pytrace=False)
        pytest.skip("SKIPPED, cannot run here: clang is not installed")
    return found


def compile_driver(out: Path, source: str, sanitize: list[str]) -> Path:
    binary = out / Path(source).stem
    subprocess.run([clang(), "-std=c11", "-g", "-O1", "-Wall", "-Wextra", "-Werror",
                    *sanitize, f"-I{CSRC}", str(DRIVERS / source),
                    *(str(CSRC / name) for name in CORE), "-o", str(binary)],
                   check=True, capture_output=True, text=True)
    return binary


def seed_probes() -> list[bytes]:
    """The table's probes and random ones aimed at the same chains, and at
    the chains with per-hop properties tests/c/chains.h mirrors."""
    rng = random.Random(7)
    chains = [c for c in CHAINS if c.length > 0]
    # The chapters tests/c/chains.h gives CHAIN4, EXT4 and CHAIN6.
    chaptered = [dataclasses.replace(CHAIN4, chapters=(Chapter("a", 2), Chapter("b", 5))),
                 dataclasses.replace(EXT4, chapters=(Chapter("a", 3),)),
                 dataclasses.replace(CHAIN6, chapters=(Chapter("a", 4),))]
    return ([param.values[0] for param in PARAMS] + [random_probe(rng, chains) for _ in range(300)]
            + [random_probe(rng, [EXT4, EXT6]) for _ in range(150)]
            + [random_probe(rng, chaptered) for _ in range(150)])


def sanitizer_env() -> dict[str, str]:
    return os.environ | {"ASAN_OPTIONS": "abort_on_error=1:detect_leaks=1",
                         "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1"}


def test_fuzz_reply_survives_adversarial_inputs(tmp_path):
    """Truncation at every length, mutated length fields, long extension
    chains and random bytes: no access outside the buffer, no UB, and every
    reply claimed lies inside the buffer and has a kind."""
    driver = compile_driver(tmp_path, "adversarial.c", SANITIZE)
    probes = tmp_path / "probes.bin"
    probes.write_bytes(b"".join(len(p).to_bytes(2, "big") + p for p in seed_probes()))
    done = subprocess.run([str(driver), str(probes)], capture_output=True, text=True,
                          env=sanitizer_env(), timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    words = done.stdout.split()
    assert words[0] == "probes" and int(words[1]) > 300 and int(words[5]) > 1000, done.stdout
    # Every kind of reply was built, a SYN-ACK and a prohibited port too.
    kinds = [int(n) for n in words[7:]]
    assert words[6] == "kinds" and len(kinds) == len(Kind) and all(kinds), done.stdout


def test_fuzz_reply_libfuzzer_bounded(tmp_path):
    """Coverage-guided fuzzing from the probes as seed corpus."""
    target = compile_driver(tmp_path, "fuzz_reply.c", ["-fsanitize=fuzzer,address,undefined",
                                                       "-fno-sanitize-recover=all"])
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for n, probe in enumerate(seed_probes()):
        (corpus / f"seed{n}").write_bytes(bytes([0xc0]) + probe)
    done = subprocess.run([str(target), "-seed=1", f"-max_total_time={FUZZ_SECONDS}",
                           "-max_len=2048", "-print_final_stats=1", str(corpus)],
                          capture_output=True, text=True, env=sanitizer_env(),
                          timeout=FUZZ_SECONDS + 300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-4000:]
    assert "Done" in done.stderr, done.stderr[-2000:]


def test_pace_units_under_sanitizers(tmp_path):
    """The delay pool (order, equal due times across a sequence wrap-around,
    full pool, slot reuse, a table freed while its replies wait), the
    buckets, loss and jitter: tests/c/pace_test.c says what each checks."""
    driver = compile_driver(tmp_path, "pace_test.c", SANITIZE)
    done = subprocess.run([str(driver)], capture_output=True, text=True,
                          env=sanitizer_env(), timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    assert done.stdout.startswith("ok "), done.stdout


def test_table_check_refuses_each_broken_invariant(tmp_path):
    """A good table passes rc_table_check(); a copy breaking one invariant of
    routechain.h at a time is refused with that invariant's fault, at the
    chain and router that break it: tests/c/table_check.c lists the cases."""
    driver = compile_driver(tmp_path, "table_check.c", SANITIZE)
    done = subprocess.run([str(driver)], capture_output=True, text=True,
                          env=sanitizer_env(), timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    assert done.stdout.startswith("ok ") and int(done.stdout.split()[1]) > 60, done.stdout
