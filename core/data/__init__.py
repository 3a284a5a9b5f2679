"""Datasets: Fashion-MNIST, CIFAR-10, an image folder (``datasets``); class names without torch
(``classes``); the test images as numpy, also without torch, for the pages' thumbnails (``pixels``).
"""
