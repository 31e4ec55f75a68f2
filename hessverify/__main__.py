"""``python -m hessverify``: the command line."""

from hessverify.cli import main

raise SystemExit(main())
