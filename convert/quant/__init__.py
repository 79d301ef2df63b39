"""Quantization: the quant-type caller, calibration rows, the imatrix pass and file, GPTQ, codecs, mixes."""
