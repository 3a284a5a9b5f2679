"""Datasets: Fashion-MNIST, CIFAR-10, an image folder (``datasets``); class names without torch
(``classes``).
"""
