"""Neural-network layers: drop-ins for Flax's whose XLA:CPU form is slow."""

from jmeta.nn.conv import Conv, conv, resolve_impl
