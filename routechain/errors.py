"""The one exception tree. A message names the bad value and where it came
from; the CLI prints it on one line and exits with the error's code."""


class RouteChainError(Exception):
    """Anything route-chain refuses to do, with a one-line reason."""

    exit_code = 1


class UsageError(RouteChainError):
    """Bad input: a command-line argument, a config file, a story."""

    exit_code = 2


class ConfigError(UsageError):
    """A config or story file that cannot be used: `file:line: reason`."""


class SetupError(RouteChainError):
    """The environment refuses: no CAP_NET_ADMIN, no /dev/net/tun, a name in use."""

    exit_code = 1
