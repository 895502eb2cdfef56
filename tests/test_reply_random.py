"""The C core against the pure-Python reference, byte for byte, on random
chains and probes with a fixed seed."""

from __future__ import annotations

import collections
import os
import random

from routechain import core

from probes import random_chains, random_probe
from reference import reference_reply

SEED = 20261123
PROBES = int(os.environ.get("RC_RANDOM_PROBES", "4000"))


def label(value: core.Kind | core.Drop) -> str:
    return f"{type(value).__name__}.{value.name}"


def test_reply_matches_reference_on_random_probes():
    """Every reply and every drop reason agrees with the reference."""
    rng = random.Random(SEED)
    seen = collections.Counter()
    chains = random_chains(rng)
    table = core.Table(chains)
    for n in range(PROBES):
        if n % 200 == 0:
            chains = random_chains(rng)
            table = core.Table(chains)
        packet = random_probe(rng, chains)
        headroom = rng.choice([core.HEADROOM] * 20 + [0, 27, 28, 47, 48])
        got = core.reply(packet, table, headroom=headroom)
        want = reference_reply(packet, chains, headroom=headroom)
        assert got == want, f"probe {n}: {packet.hex()} with {chains}"
        # Kind and Drop are IntEnums whose values collide: count by name.
        seen[label(core.kind(got) if isinstance(got, bytes) else got)] += 1
    # The generator must reach every reply kind and every drop but the
    # ones only hand-made probes reach.
    rare = {core.Drop.NONE, core.Drop.BAD_VERSION}
    wanted = [label(k) for k in core.Kind] + [label(d) for d in core.Drop if d not in rare]
    assert [name for name in wanted if not seen[name]] == [], seen
