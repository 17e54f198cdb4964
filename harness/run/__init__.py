"""Running configs: the grid, the one driver, the protocol and its training loops."""
