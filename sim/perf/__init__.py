"""Performance model: statistical and exact cycle models, sparsity sources, workloads."""
