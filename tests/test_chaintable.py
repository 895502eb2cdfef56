"""The table compiler (routechain.chaintable) hands every table to the C
side's check before it can be published: a table that breaks an invariant
of csrc/routechain.h is refused with one line naming the chain, the router
and the invariant, and the live table stays. tests/c/table_check.c breaks
each invariant in C; here the Python side's part: the message and the
refusal at Table() and Live.publish()."""

from __future__ import annotations

import dataclasses

import pytest

from routechain import chaintable, config
from routechain._core import ffi
from routechain.chain import MAX_CHAPTERS, Chapter
from routechain.errors import ConfigError, UsageError
from routechain.workers import Live
from test_reply_ext import EXT4, EXT6


def test_table_check_passes_every_table_the_compiler_builds():
    table = chaintable.Table([EXT4, EXT6], config.Limits(rate=100), queues=3)
    table.check()
    assert table.ptr.chains[0].n_hops == len(chaintable.routers_of(EXT4))
    assert table.ptr.chains[0].ext_bytes > 0


@pytest.mark.parametrize("breakage, fault, where", [
    (lambda c: setattr(c.hops[3], "n_alts", 2), "alternatives", "hop 3"),
    (lambda c: setattr(c.hops[2], "hop", 5), "hop_number", "hop 2"),
    (lambda c: setattr(c.hops[1], "ext_len", 600), "ext_range", "hop 1"),
    (lambda c: setattr(c, "end", 7), "end", ""),
    (lambda c: setattr(c, "min_mtu", 1000), "mtu", ""),
], ids=["alternatives", "hop_number", "ext_range", "end", "min_mtu"])
def test_table_check_names_chain_router_and_invariant(breakage, fault, where):
    table = chaintable.Table([EXT4])
    breakage(table.ptr.chains[0])
    with pytest.raises(ConfigError) as raised:
        table.check()
    message = str(raised.value)
    assert message.startswith(f"chain {EXT4.host}/25{' ' + where if where else ''}: "
                              f"the C core refuses the table ({fault}): "), message
    assert "\n" not in message


def test_table_check_names_the_chapter():
    """A chapter whose start the table breaks is named by its label."""
    chain = dataclasses.replace(EXT4, chapters=(Chapter("intro", 2), Chapter("finale", 5)))
    table = chaintable.Table([chain])
    entries = table.ptr.chains[0].chapters
    assert table.ptr.chains[0].n_chapters == 2
    assert [bytes(entries[i].addr[0:4]) for i in range(2)] == [
        chain.chapter_address(c).packed for c in chain.chapters]
    assert chain.chapter_address(chain.chapters[0]) == EXT4.host + 8   # past the '+' at +7
    entries[1].start = 7
    with pytest.raises(ConfigError) as raised:
        table.check()
    assert str(raised.value).startswith(f"chain {EXT4.host}/25 chapter finale: the C core "
                                        "refuses the table (chapters): "), raised.value


def test_chapters_are_refused_past_the_limit_of_the_core():
    """The C core scans at most RC_MAX_CHAPTERS: the model refuses more."""
    assert MAX_CHAPTERS == chaintable.lib.RC_MAX_CHAPTERS
    many = tuple(Chapter(f"c{i}", 2, f"rc.toml:{i}") for i in range(MAX_CHAPTERS + 1))
    with pytest.raises(UsageError, match=rf"^rc.toml:{MAX_CHAPTERS}: more than "
                                         rf"{MAX_CHAPTERS} chapters in one chain$"):
        dataclasses.replace(EXT4, chapters=many)


def test_live_publish_refuses_a_bad_table_and_keeps_serving_the_old():
    good, bad = chaintable.Table([EXT4]), chaintable.Table([EXT6])
    live = Live(good)
    bad.ptr.chains[0].hops[4].reply_ttl = 0
    with pytest.raises(ConfigError, match=r"hop 4: .*\(reply_ttl\)"):
        live.publish(bad)
    assert live.table is good
    with pytest.raises(ConfigError):
        Live(bad)


def test_table_check_refuses_limited_without_buckets():
    table = chaintable.Table([], config.Limits(rate=None, source_rate=None))
    table.ptr.limited = 1
    with pytest.raises(ConfigError, match=r"^table: .*\(limited\)"):
        table.check()


def test_table_from_a_previous_one_keeps_rows_and_answers_as_a_fresh_one():
    """A reload's table (previous=) reuses the compiled rows of the very
    Chain objects the last table had, compiles the others, gives each
    table its own rate-limit state, and answers every probe exactly as a
    table built from scratch (random chains and probes, fixed seed)."""
    import dataclasses
    import random
    from probes import random_chains, random_probe
    rng = random.Random(21)
    compared = 0
    for _ in range(20):
        old_chains = random_chains(rng)
        old = chaintable.Table(old_chains, config.Limits(), 2)
        changed = rng.randrange(len(old_chains))
        new_chains = list(old_chains)
        # The same prefix told otherwise (a new Chain object), or gone.
        if rng.random() < 0.7:
            was = old_chains[changed]
            new_chains[changed] = dataclasses.replace(
                was, reply_ttl=rng.choice([t for t in (3, 64, 200) if t != was.reply_ttl]))
        else:
            del new_chains[changed]
        new = chaintable.Table(new_chains, config.Limits(), 2, previous=old)
        fresh = chaintable.Table(new_chains, config.Limits(), 2)
        for i, chain in enumerate(new.chains):
            slot = new.ptr.chains[i]
            j = old.chains.index(chain) if any(c is chain for c in old.chains) else None
            if j is not None and chain.has_extensions:
                assert slot.hops == old.ptr.chains[j].hops  # kept: the same memory
            if chain.has_timing:
                assert slot.hop_tat != (old.ptr.chains[j].hop_tat if j is not None
                                        else ffi.NULL)
        for _ in range(60):
            packet = random_probe(rng, new_chains)
            assert chaintable.reply(packet, new) == chaintable.reply(packet, fresh)
        compared += 1
    assert compared == 20
