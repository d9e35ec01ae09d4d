"""One module per ``attrtag`` subcommand; each exposes ``register(subparsers)``."""
