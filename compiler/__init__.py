"""airfoil.compiler"""
