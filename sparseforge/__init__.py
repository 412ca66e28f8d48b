"""sparseforge: an Amaranth RTL generator for dual-sparse DNN-training accelerators.

Subpackages (folders mapped by setuptools ``package-dir``):

* :mod:`sparseforge.hdl`    -- Amaranth components (``hdl/``)
* :mod:`sparseforge.gen`    -- configuration, CLI, Verilog emission (``gen/``)
* :mod:`sparseforge.sim`    -- bit-exact golden model, test kit (``sim/``)
* :mod:`sparseforge.boards` -- FPGA platforms and flows (``boards/``)
"""

__version__ = "0.1.0"
