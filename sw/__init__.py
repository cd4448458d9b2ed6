"""tokensift.sw"""
