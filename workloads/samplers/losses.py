"""The diffusion sampler's own piece of its losses (arXiv:2402.05098, Sec. 2-3): the intermediate target of its
forward-looking flows. The objectives themselves (TB, VarGrad, SubTB, FL-SubTB, PIS) are the shared pure
functions of workloads/objectives.py.
"""

from __future__ import annotations

from torch import Tensor


def intermediate_log_reward(log_p_ref: Tensor, log_reward: Tensor, t: Tensor) -> Tensor:
    """The intermediate target log R~ of FL-SubTB (Zhang et al. 2023, DGFS, arXiv:2310.02679), at interior
    times 0 < t < 1:

        log R~(x_t, t) = (1 - t) log p_ref(x_t, t) + t log R(x_t)

    p_ref(., t) = N(0, sigma^2 t I) is the marginal at time t of the zero-drift reference process
    (`sde.reference_log_marginal`); the learned log F~_theta only corrects the interpolation between it and
    the target: log F(x_t, t) = log R~(x_t, t) + log F~_theta(x_t, t) (`objectives.forward_looking_log_flows`).
    All inputs [B, T-1] (t broadcastable) -> [B, T-1].
    """
    return (1 - t) * log_p_ref + t * log_reward
