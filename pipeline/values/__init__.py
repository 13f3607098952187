"""Statistics of parameter values, streamed from memory-mapped safetensors at close to memory bandwidth.

Each tensor is viewed in place through mmap (no copy for float32; half types are widened into one
float32 work buffer), and walked in cache-sized chunks. Per chunk, float32 kernels give the sum,
the sum of squares (a dot product), min and max; the totals accumulate in Python floats (float64).
Consumed pages are released (madvise DONTNEED) every window, so resident memory stays bounded by the
chunk and window sizes whatever the checkpoint size, including checkpoints larger than RAM.

Precision: float32 chunk sums are cascaded by torch and accumulated in float64 across chunks, so
means, standard deviations and correlations carry about 6 significant digits.

reader (the files, chunk by chunk), moments, correlate (ties), distributions (the bias stage's tables) and ties
(the value evidence of a tie). May import pipeline.core, pipeline.formats and pipeline.model.
"""
