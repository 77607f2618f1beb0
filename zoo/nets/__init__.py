"""Network architectures. Only layers and forward passes live here."""

from zoo.nets.cpnet import CPNet, NetConfig

__all__ = ["CPNet", "NetConfig"]
