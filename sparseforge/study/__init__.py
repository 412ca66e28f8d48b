"""Training study: sparse training of a small CNN, accuracy and sparsity statistics."""
