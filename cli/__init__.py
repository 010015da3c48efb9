"""The keras-prune command-line tool (installed as the package `keras_prune_cli`)."""
