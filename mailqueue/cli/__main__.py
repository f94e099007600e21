"""`python -m mailqueue.cli`: the same command as the `mailqueue` script."""

from mailqueue.cli import app

app()
