"""``python -m xgir``: the same as the ``xgir`` script."""

from xgir.cli import main

raise SystemExit(main())
