"""The commands of `keras-prune`, one module each."""

from keras_prune_cli.commands.layers import layers
from keras_prune_cli.commands.run import run
from keras_prune_cli.commands.test import test
from keras_prune_cli.commands.train import train

ALL = [train, layers, run, test]
