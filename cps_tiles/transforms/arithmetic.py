"""The integer entropy path's number formats: bounds, fixed-point positions, the leaky ReLU, the
gains' and classes' grids, the digits of an int8 product. The one statement of these constants:
:mod:`cps_tiles.transforms.integer` (the arithmetic), :mod:`cps_tiles.transforms.compiled` (its
kernels, which freeze them into their code), :mod:`cps_tiles.coding.reference` and the coder's
tables all read them here. They define released chunk formats and never change.
"""

from __future__ import annotations

#: Bound of every hidden activation and network input (|value| <= ACT).
ACT = 1023
#: Integer leaky ReLU: x < 0 -> (LEAKY_MUL * x) >> LEAKY_SHIFT (a slope of 0.010).
LEAKY_MUL, LEAKY_SHIFT = 41, 12
#: Formats: means Q6 (|mean| <= 2^15 units of 1/64), log2 sigma Q8, the hyper's raw scale Q5.
MEAN_BITS, MEAN_MAX = 6, 1 << 15
LOG_BITS, LOG_MIN, LOG_MAX = 8, -8 << 8, 12 << 8
RAW_BITS, RAW_MAX = 5, 2047
#: Network inputs: means Q4 and log2 sigma Q6 (``>> INPUT_SHIFT`` of their formats), u = y_hat / gain Q4.
INPUT_SHIFT, U_BITS = 2, 4
#: The quality code: weights of the two neighbouring levels, in hundredths (sum 100).
CODE_ONE = 100
#: Gains: log2 gain Q16 per level, interpolated in hundredths of a quality step; 2^x from a table
#: of 2^(j / 2^EXP2_BITS) in Q16.
GAIN_BITS, EXP2_BITS = 16, 10
#: Largest weight magnitude (10-bit weights, stored as int16).
WEIGHT_MAX = 511
#: Largest operand of an exact int8 product (see the module docstring) and largest int32 sum.
INT8_EXACT, INT32_EXACT = 63, 1 << 31
#: Integers float32 and float64 hold exactly: every partial sum stays below these.
FLOAT32_EXACT, FLOAT64_EXACT = 1 << 24, 1 << 53

# -- sigma classes and coding tables (the coder, coding/tables.py, builds its tables from these) --
#: Scale classes: class c stands for log2 sigma = (SIGMA_LOG0 + SIGMA_STEP * c) / 256, sigma in
#: y_hat units: 0.11 (SIGMA_LOG0 = 256 log2 0.11) up to 392, 3/16 of an octave apart.
SIGMA_CLASSES, SIGMA_LOG0, SIGMA_STEP = 64, -815, 48
#: Means are coded to 1/2^MEAN_FRAC_BITS of y_hat: a table per fraction below FLAT_CLASS (sigma < 4);
#: from there on the fraction changes the distribution too little and the mean is rounded instead.
MEAN_FRAC_BITS = 3
FLAT_CLASS = -(-((2 << 8) - SIGMA_LOG0) // SIGMA_STEP)


#: Digits of an int8 digit product: inputs within ACT split into x >> DIGIT_BITS (within +-32) and
#: x & (2^DIGIT_BITS - 1) (0..31), both within INT8_EXACT (an input within INT8_EXACT: 0 and itself).
DIGIT_BITS = 5
