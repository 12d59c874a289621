"""`python -m solo_cli`: a signal during the imports below already ends in one line and exit code 130."""

from .errors import exit_on_signals

exit_on_signals()

from .cli import main  # noqa: E402

main()
