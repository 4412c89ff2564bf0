"""airfoil.sim"""
