"""airfoil.hw"""
