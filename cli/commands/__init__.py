"""The commands of `keras-prune`, one module each."""

from keras_prune_cli.commands.export import export
from keras_prune_cli.commands.info import info
from keras_prune_cli.commands.layers import layers
from keras_prune_cli.commands.plot import plot
from keras_prune_cli.commands.run import run
from keras_prune_cli.commands.sensitivity import sensitivity
from keras_prune_cli.commands.shrink import shrink
from keras_prune_cli.commands.test import test
from keras_prune_cli.commands.train import train

ALL = [train, layers, run, test, info, export, shrink, sensitivity, plot]
