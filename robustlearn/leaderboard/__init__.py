"""The leaderboard: results-store rows -> mean ± std over seeds, ranks -> Markdown, CSV, HTML and plots."""

from robustlearn.leaderboard.aggregate import Leaderboard, aggregate
from robustlearn.leaderboard.main import leaderboard_cli, leaderboard_main

__all__ = ["Leaderboard", "aggregate", "leaderboard_cli", "leaderboard_main"]
