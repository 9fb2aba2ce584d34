"""Outsourced diffusion sampling (arXiv:2502.06999): a diffusion sampler trained in the noise space of a generator
x = f(z), z ~ N(0, I), on N(z; 0, I) r(f(z))^beta, samples the posterior p_f(x) r(x)^beta without touching f.

flow.py: an invertible generator with an exact density (RealNVP), for the 2-d case whose data-space posterior is
known. noise_target.py: the noise-space posterior as a `Target` of the diffusion-sampler family.
"""
