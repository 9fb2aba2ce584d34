"""DDPM image priors (Ho et al. 2020, arXiv:2006.11239), plain PyTorch and diffusers, shared by the image families.

config.py    DDPMConfig, VAEConfig, LatentDDPMConfig, ClassifierConfig: data set, shapes, noise schedule, training,
             strided sampling, optional hub weights (importing it loads neither torch nor diffusers: sweeps validate
             fast)
schedule.py  StridedSchedule: K kept timesteps, the exact forward steps and the Gaussian reverse steps between them
unet.py      eps_theta: a diffusers UNet2DModel built from the config, optional conditioning channels
ddpm.py      DDPM: the epsilon loss, `sample` (trajectories with per-step log-densities), `log_prob_steps`
             (re-scoring with gradient), `noise_back` (forward noising for backtracking)
train.py     training_images, train_ddpm (AdamW, warm-up + cosine, seeded) and prior_key (a trained prior's cache key)
vae.py       the VAE of latent diffusion; latent.py, the DDPM prior on its latents
"""
