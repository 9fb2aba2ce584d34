"""Inverse problems under diffusion priors (RTB for inverse problems, arXiv:2503.09746): posteriors
p(x | y) ~ p(x) r_y(x) of a measurement y = A(x) + sigma_y n, with log r_y(x) = -|y - A(x)|^2 / (2 sigma_y^2).

config.py (OperatorConfig and `operator_problem`, the check of an operator against a prior's image shape;
LinearGaussianConfig), operators.py (box and random inpainting, Gaussian deblurring, |FFT| phase retrieval, and the
likelihood), linear_gaussian.py (the linear-Gaussian toy: closed-form posterior and log Z, the prior's exact noise
prediction as a DDPM model, the exact law of its strided chain), amortized.py (AmortizedPosterior: a y-conditioned
posterior trained with relative trajectory balance, and its calibration against the closed form).
"""
