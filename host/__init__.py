"""airfoil.host"""
