"""The bit-exact reference: golden model and the hardware PRNG."""
