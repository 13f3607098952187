"""What the parameters cost: memory per dtype, training memory, the KV cache and compute, from the exact count.

May import pipeline.core and pipeline.model.
"""
