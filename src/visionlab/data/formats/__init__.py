"""File formats, read (and for tests written) without knowing any dataset: idx (the MNIST
family), CIFAR's pickled batches, image files."""
