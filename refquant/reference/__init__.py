"""Plain NumPy twins of every compiled kernel, written to read like the math.

Each function here is what a Cython kernel in ``kernels/`` computes; the tests run both on many shapes and
require equality (bit-exact for integer paths, a stated tolerance for float paths).
"""
