"""`tokensift train`: not built yet (see the open issues); says so plainly."""

from tokensift.errors import NotYetAvailableError


def add_arguments(parser):
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def run(args):
    raise NotYetAvailableError("'tokensift train' is not implemented yet in this version of tokensift")
