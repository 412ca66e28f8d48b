"""Offline mapper: the compiler that turns layer tensors into the PE array's jobs (operand rows,
tap bundles, scratchpad loads, drains) and models their exact cycle counts."""
