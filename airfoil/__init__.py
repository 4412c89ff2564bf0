"""Airfoil: compressed LLMs to FPGA hardware, verified at every step.

``airfoil`` (this folder) holds the shared contract: the config object, the ISA and the CLI.
The subpackages ``airfoil.compiler``, ``airfoil.hw``, ``airfoil.sim`` and ``airfoil.host`` live in
the top-level folders of the same names.
"""
__version__ = "0.1.0"
