"""The command line: the only module that prints and exits.

    route-chain [OPTIONS] ADDR/PLEN [ADDR/PLEN ...]   serve chains (as the original)
    route-chain --config FILE [OPTIONS] [ADDR/PLEN ...]
    route-chain zone --config FILE --output-dir DIR   write PTR zone files
    route-chain preview --config FILE                 what traceroute will show
    route-chain registry --config FILE                DN42 registry objects per chain
    route-chain demo                                  a story in throwaway namespaces
    route-chain reload PID                            reload a running daemon and wait
    route-chain doctor [--config FILE]                what makes a deployment fail
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

from . import __version__, settings
from .chain import Chain
from .config import Config, Route, check, one_line
from .errors import RouteChainError, UsageError

PROG = "route-chain"


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors are ours: one line, exit 2."""

    def error(self, message: str) -> None:
        raise UsageError(message)


def _int_in(lo: int, hi: int, what: str):
    """An integer argument only the command line takes (a PID, a timeout);
    options a config file also takes are declared in settings.py."""
    def parse(text: str) -> int:
        try:
            value = int(text, 10)
        except ValueError:
            raise argparse.ArgumentTypeError(f"bad {what} {text!r}: not a number") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"bad {what} {text!r}: {lo}..{hi}")
        return value
    return parse


def run_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog=PROG,
        description="Answer traceroute probes through prefixes with a story: a probe to D "
                    "arriving with TTL t is answered by hop host+t until host+t reaches D.",
        epilog=f"Other commands: {PROG} zone | preview | registry | demo | reload | doctor "
               "(each takes --help).")
    p.add_argument("prefixes", nargs="*", metavar="ADDR/PLEN",
                   help="host address and prefix of a chain (a bare address is /32 or /128)")
    p.add_argument("-c", "--config", type=Path, metavar="FILE",
                   help="TOML file with chains, stories, routes and DNS (re-read on SIGHUP)")
    # The options a config file also takes: declared once, in settings.py.
    settings.add_options(p)
    p.add_argument("--user", metavar="NAME",
                   help="read the config and stories as this user, and drop to it after "
                        "setup (the DNS and metrics listeners are bound before), keeping "
                        "only CAP_NET_ADMIN")
    p.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    p.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    return p


def command_line_config(args: argparse.Namespace) -> Config:
    """The part of the configuration the command line gives: chains, routes
    and the [table] settings it has a flag for (the rest stay unset)."""
    address = settings.setting("chain", "address")
    chains = tuple(Chain(address.parse(text, f"command line: {text}"), reply_ttl=args.reply_ttl,
                         where="command line") for text in args.prefixes)
    routes = [Route(prefix, args.route_table, args.route_metric, f"--route {prefix}")
              for prefix in args.route]
    tables, origins = settings.command_line(args)
    given = Config(chains=chains, routes=tuple(routes), origins=origins, **tables)
    check(given)
    return given


def check_runnable(config: Config) -> Config:
    if not config.chains:
        raise UsageError("no chain: give ADDR/PLEN on the command line or [[chain]] in --config")
    return config


def cmd_run(argv: list[str]) -> int:
    args = run_parser().parse_args(argv)
    cli = command_line_config(args)

    from . import config as config_file
    memo = config_file.Memo()  # what a reload keeps of what did not change

    def load() -> Config:
        """The effective configuration, its files read with the permissions
        of --user (privilege.reading_as): at start as on every reload."""
        if args.config is None:
            return check_runnable(cli)
        from . import privilege
        with privilege.reading_as(args.user):
            file = config_file.load(args.config, memo)
        return check_runnable(config_file.merge(cli, file))

    from . import daemon, service
    took = daemon.Phases()
    first = load()  # refuse bad input before touching the system
    took("load")
    service.setup_logging(args.verbose)
    return daemon.run(load, user=args.user, config=first, took=took)


def cmd_zone(argv: list[str]) -> int:
    p = _Parser(prog=f"{PROG} zone",
                description="Write one master file per reverse zone of the chains' stories "
                            "(and per forward name), for BIND, Knot or NSD.")
    p.add_argument("-c", "--config", type=Path, required=True, metavar="FILE")
    p.add_argument("-o", "--output-dir", type=Path, required=True, metavar="DIR")
    args = p.parse_args(argv)
    from . import config as config_file, names, zone
    config = config_file.load(args.config)
    for warning in config.log_lines:
        print(f"warning: {warning}", file=sys.stderr)
    if config.dnssec.enabled:
        from . import dnssec
        keys = _dnssec_keys(config)
        # One zone made, signed and written at a time, from its draft: all
        # of them held at once took a gigabyte for 10,000 chains.
        drafted = zone.drafts(config)
        zones = itertools.chain((d.zone() for d in drafted), names.build(config))
        written = []
        for path, z in dnssec.export(zones, keys, config.dnssec, args.output_dir, time.time()):
            print(path)
            written.append((z.origin, z.soa.ttl))
        print(f"; DS records for the parent zones ({keys.describe()}):")
        print(dnssec.ds_lines(written, keys), end="")
    else:
        for path in zone.export(config, args.output_dir) + names.export(config, args.output_dir):
            print(path)
    parent = zone.parent_records(config)
    if parent:
        print(parent, end="" if parent.endswith("\n") else "\n")
    return 0


def cmd_preview(argv: list[str]) -> int:
    p = _Parser(prog=f"{PROG} preview",
                description="Print what traceroute will show for each chain (no root needed).")
    p.add_argument("-c", "--config", type=Path, required=True, metavar="FILE")
    args = p.parse_args(argv)
    from . import config as config_file, preview
    config = config_file.load(args.config)
    for warning in config.rewrites + config.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(preview.render(config), end="")
    return 0


def cmd_registry(argv: list[str]) -> int:
    p = _Parser(prog=f"{PROG} registry",
                description="Print, for each chain's block, the inetnum/inet6num (with "
                            "nserver lines) and route/route6 objects a DN42 or RIPE-style "
                            "registry needs, ready to paste.")
    p.add_argument("-c", "--config", type=Path, required=True, metavar="FILE")
    p.add_argument("--source", default="DN42", metavar="NAME",
                   help="the objects' source: attribute (default: DN42)")
    args = p.parse_args(argv)
    from . import config as config_file, registry
    config = config_file.load(args.config)
    ds = {}
    if config.dnssec.enabled:
        from . import dnssec, zone
        keys = _dnssec_keys(config)
        # The origins alone, from the drafts: no zone is built for them.
        ds = {d.origin_name: dnssec.ds(d.origin_name, keys).to_text()
              for d in zone.drafts(config)}
    print(registry.render(config, args.source, ds), end="")
    return 0


def _dnssec_keys(config: Config):
    """The DNSSEC keys of [dnssec], made (and said so) when none exist."""
    from . import dnssec
    keys = dnssec.load_keys(config.dnssec)
    if keys.made:
        print(f"made DNSSEC keys: {keys.describe()}", file=sys.stderr)
    return keys


def cmd_demo(argv: list[str]) -> int:
    p = _Parser(prog=f"{PROG} demo",
                description="Run a built-in story in a throwaway pair of network namespaces "
                            "and show a real traceroute through it (root).")
    p.add_argument("-6", dest="family", action="store_const", const=6, default=4,
                   help="trace the IPv6 chain")
    args = p.parse_args(argv)
    from . import demo
    print(demo.run_demo(args.family), end="")
    return 0


def cmd_reload(argv: list[str]) -> int:
    p = _Parser(prog=f"{PROG} reload",
                description="Make the route-chain process PID reload its config and wait "
                            "until it has: exit 0 when the new config is live, 1 when it "
                            "was refused (the old one goes on serving). The unit's "
                            "ExecReload.")
    p.add_argument("pid", type=_int_in(1, 2**22, "pid"), metavar="PID")
    p.add_argument("--timeout", type=_int_in(1, 3600, "timeout"), default=80, metavar="SECONDS",
                   help="give up after this long (default: 80, within systemd's 90)")
    args = p.parse_args(argv)
    from . import service
    service.request_reload(args.pid, args.timeout)
    return 0


def cmd_doctor(argv: list[str]) -> int:
    from . import doctor
    p = _Parser(prog=f"{PROG} doctor",
                description="Check, on the router, what makes a deployment fail: forwarding "
                            "and accept_ra, rp_filter, routes that shadow a chain, proxy NDP, "
                            "firewall rules, the DNS listeners, the kernel's ICMP rate limit. "
                            "One line per finding with its fix; exit 1 when something is "
                            "wrong. Run it as root while route-chain runs.")
    p.add_argument("-c", "--config", type=Path, default=doctor.DEFAULT_CONFIG, metavar="FILE",
                   help=f"the daemon's config (default: {doctor.DEFAULT_CONFIG})")
    p.add_argument("--uplink", action="append", default=[], metavar="NAME",
                   help="an interface probes arrive on (repeatable; default: the interfaces "
                        "of the default routes)")
    args = p.parse_args(argv)
    for name in args.uplink:
        settings.check_interface_name(name, f"--uplink {name}")
    from . import config as config_file
    config = config_file.load(args.config)
    text, status = doctor.report(doctor.diagnose(doctor.gather(config, tuple(args.uplink))))
    print(text, end="")
    return status


# The subcommands, by the word that names them (the man page lists the same).
COMMANDS = {"zone": cmd_zone, "preview": cmd_preview, "registry": cmd_registry,
            "demo": cmd_demo, "reload": cmd_reload, "doctor": cmd_doctor}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv and argv[0] in COMMANDS:
            return COMMANDS[argv[0]](argv[1:])
        return cmd_run(argv)
    except RouteChainError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # noqa: BLE001 - a bug still ends in one line, not a traceback
        print(f"{PROG}: internal error: {one_line(e)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
