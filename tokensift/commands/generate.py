"""``tokensift generate BLOCK ... --out DIR``: Verilog plus a JSON manifest for one hardware block."""

from __future__ import annotations

import sys

from tokensift.commands import blocks


def add_arguments(parser):
    sub = parser.add_subparsers(dest="block", metavar="BLOCK", required=True)
    for name, glue in blocks.available().items():
        p = sub.add_parser(name, help=glue.HELP, description=glue.HELP)
        glue.add_generate_arguments(p)
        p.add_argument("--out", required=True, help="output directory for <toplevel>.v and <toplevel>.json")
        p.add_argument("--json", action="store_true", help="print the manifest as one JSON object on stdout")
        p.set_defaults(_glue=glue)


def run(args) -> int:
    from tokensift.checks import check_output_dir
    from tokensift.cli import emit_json
    from tokensift.hw.common.manifest import write_outputs

    component, toplevel, parameters = args._glue.build(args)
    check_output_dir("--out", args.out)
    # a block's glue may add its own manifest sections (the accelerator: its estimated resources)
    extra = args._glue.manifest_extra(args, component) if hasattr(args._glue, "manifest_extra") else None
    data = write_outputs(component, toplevel=toplevel, block=args.block, parameters=parameters, out_dir=args.out,
                         extra=extra)
    if args.json:
        emit_json(data)
    else:
        for path in data["files"]:
            print(path)
    print(f"generated {args.block} as {toplevel} in {args.out}", file=sys.stderr)
    return 0
