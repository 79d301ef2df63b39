"""medkit.tui: the Textual chat app (chat extra; no torch)."""
