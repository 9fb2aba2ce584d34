"""Typed configuration of the outsourced workload (arXiv:2502.06999); defaults in one place.

The 2-d case: a RealNVP fitted to the 9-mode grid (toy.py), the noise-space posterior N(z) r(f(z))^beta, and the
diffusion sampler of workloads/samplers trained on it with sigma^2 = 1 (its reference process ends in N(0, I)).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from workloads.diffusion.config import (
    DATASET_CHANNELS,
    NOT_TRAINING_FIELDS,
    VAE_NOT_TRAINING_FIELDS,
    ClassifierConfig,
    DDPMConfig,
    VAEConfig,
)
from workloads.outsourced.mcmc import ChainsConfig
from workloads.rtb.image_config import DEFAULT_PRIOR, NUM_CLASSES
from workloads.samplers.config import SamplerConfig
from workloads.typed_config import StrictConfig


class FlowConfig(StrictConfig):
    """The generator of the 2-d case and its maximum-likelihood fit (deterministic in `seed`)."""

    num_couplings: int = Field(8, gt=0)
    hidden_dim: int = Field(64, gt=0)
    output_scale: float = Field(3.0, gt=0)
    """a of x = a v: the grid's spacing, so the couplings work at unit scale."""
    fit_iters: int = Field(3_000, ge=0)
    batch_size: int = Field(512, gt=0)
    lr: float = Field(1e-3, gt=0)
    seed: int = 0


DIGITS_VAE = VAEConfig(image_size=8, hidden_channels=(32, 64), latent_channels=4, kl_weight=1.0, train_iters=3000)
"""8 x 8 digits (the classifier reward's input) through a 4 x 2 x 2 = 16-d latent. kl_weight = 2 sigma_x^2 is large
enough that Dec(z), z ~ N(0, I), draws digits: the latent diffusion VAE's 0.01 leaves the posterior far from the
prior (docs/outsourced.md)."""
COLOR_DSPRITES_VAE = VAEConfig(
    dataset="color_dsprites", image_size=16, hidden_channels=(32, 64), latent_channels=4, kl_weight=1.0
)
"""16 x 16 x 3 ColorDSprites (4,096 training images) through a 4 x 4 x 4 = 64-d latent, kl_weight as the digits'."""
REWARD_CLASSIFIER_DATA = {
    "digits": DEFAULT_PRIOR,
    "color_dsprites": DDPMConfig(dataset="color_dsprites", image_size=16),
}
"""The images each classifier of r(x, c) = p(c | x) is trained on (dataset, image_size), by data set: the RTB family's
digits classifier (its prior's images), and one on ColorDSprites' shapes."""
REWARD_CLASSIFIER = {"digits": ClassifierConfig(), "color_dsprites": ClassifierConfig(epochs=30)}
"""The classifier of r by data set: the RTB family's for digits; ColorDSprites' shapes at 16 x 16 are harder to
tell apart (held-out accuracy 0.59 after 10 epochs, 0.67 after 30: docs/outsourced.md)."""
VAE_GENERATORS = {"vae_digits": "digits", "vae_color_dsprites": "color_dsprites"}
"""The VAE generators and their data sets."""

GENERATOR_FORMAT = 1
"""Bumped when the code that fits a generator (or the digits classifier) changes what it produces."""

NOISE_SAMPLER = SamplerConfig(
    target="gmm25",  # unused: the learner passes its noise-space target
    sigma2=1.0,
    num_steps=50,
    exploration_factor=0.2,
    exploration_decay_fraction=0.5,
    log_variance_range=1.0,
)
"""The noise-space sampler's defaults: sigma^2 = 1 (the reference process is N(0, I) at t = 1), T = 50, TB with a
learned log Z, exploration 0.2 decaying to 0 at half of training, a learned step variance."""


class OutsourcedConfig(StrictConfig):
    """A diffusion sampler in the noise space of a generator, towards p_f(x) r(x)^beta (or, method: mcmc, MCMC
    chains there, the baseline)."""

    method: Literal["sampler", "mcmc"] = "sampler"
    """sampler: the diffusion sampler of `sampler`; mcmc: `mcmc.num_chains` MALA or HMC chains in z (mcmc.py), a
    step of all of them an iteration (total_iters, eval_every count MCMC steps)."""
    generator: Literal["flow2d", "vae_digits", "ddim_digits", "vae_color_dsprites"] = "flow2d"
    """flow2d: RealNVP on the 9-mode grid, r keeping 4 of its modes (grid.py). vae_digits: the decoder of a VAE on
    8 x 8 digits; ddim_digits: the RTB family's digits DDPM run as the DDIM ODE, z = x_K; both with r(x) = p(c | x)
    of the RTB family's classifier. vae_color_dsprites: the decoder of a VAE on 16 x 16 ColorDSprites, r(x) =
    p(c | x) of a classifier of its shapes (images.py)."""
    flow: FlowConfig = FlowConfig()
    vae: VAEConfig = DIGITS_VAE
    """vae_digits: the VAE whose decoder is f (z ~ N(0, I) its prior); trained once, deterministic in vae_seed."""
    color_dsprites_vae: VAEConfig = COLOR_DSPRITES_VAE
    """vae_color_dsprites: its VAE, as `vae` is vae_digits'."""
    vae_seed: int = 0
    prior: DDPMConfig = DEFAULT_PRIOR
    """ddim_digits: the DDPM (the RTB family's digits prior by default, so the data-space RTB posterior shares it),
    its ODE taking prior.sampling_steps steps; trained once, deterministic in prior_seed."""
    prior_seed: int = 0
    target_class: int = Field(0, ge=0)
    """The image generators' c of r(x) = p(c | x): a class (digits: 0-9; ColorDSprites' shapes: 0 square,
    1 ellipse, 2 heart), K the even classes, K + 1 the odd ones (K classes)."""
    generator_missing: Literal["fit", "fail"] = "fit"
    """In a sweep: a generator that the MLflow store's cache lacks is fitted before the trials (fit), or the sweep
    stops naming it (fail)."""
    beta: float = Field(1.0, gt=0)
    beta_start: float | None = Field(None, gt=0)
    """With beta_anneal_iters > 0: training anneals beta_s linearly from this to beta (the reference: 2 -> 4 over
    2,000 iterations on CIFAR-10); the replayed states' log R follow beta_s. Evaluation uses beta."""
    beta_anneal_iters: int = Field(0, ge=0)
    reference_samples: int = Field(100_000, gt=1)
    """M: N(0, I) draws behind the exact answers (log Z_MC, resampled exact posterior samples)."""
    sampler: SamplerConfig = NOISE_SAMPLER
    """The noise-space sampler (workloads/samplers/config.py); its total_iters and eval_every are this config's."""
    mcmc: ChainsConfig = ChainsConfig()
    """method: mcmc: the chains (on the sweep's `chains` worker actors when it names them, else in the learner)."""
    total_iters: int = Field(6_000, gt=0)
    eval_every: int = Field(1_000, gt=0)
    eval_samples: int = Field(4_000, gt=1)
    """N: samples of each evaluation (mode masses, W2 in data space, the sampler's own metrics)."""

    @model_validator(mode="after")
    def _generator_output_is_the_rewards_input(self) -> OutsourcedConfig:
        if self.generator == "flow2d":
            return self
        if self.target_class > self.num_classes() + 1:
            raise ValueError(
                f"target_class={self.target_class}: the {self.dataset()} classifier has {self.num_classes()} classes "
                f"(0-{self.num_classes() - 1}, {self.num_classes()} even, {self.num_classes() + 1} odd)"
            )
        name = {"vae_digits": "vae", "vae_color_dsprites": "color_dsprites_vae"}.get(self.generator, "prior")
        model = self.image_generator_config()
        data = self.reward_data()
        produced = (model.channels, model.image_size, model.image_size)
        expected = (DATASET_CHANNELS[data.dataset], data.image_size, data.image_size)
        if produced != expected or model.dataset != data.dataset:
            raise ValueError(
                f"{name}: the generator draws {model.dataset} images of shape {list(produced)} ({name}.dataset, "
                f"{name}.image_size), but the reward's classifier reads {data.dataset} images of shape "
                f"{list(expected)}: set {name}.dataset: {data.dataset} and {name}.image_size: {data.image_size}"
            )
        return self

    @model_validator(mode="after")
    def _anneal_has_a_start(self) -> OutsourcedConfig:
        if self.beta_anneal_iters > 0 and self.beta_start is None:
            raise ValueError(
                f"beta_anneal_iters={self.beta_anneal_iters} anneals beta towards {self.beta} from beta_start, which "
                "is not set: set beta_start (e.g. beta / 2), or beta_anneal_iters: 0"
            )
        return self

    def dataset(self) -> str:
        """The image generators' data set (and their classifier's)."""
        return VAE_GENERATORS.get(self.generator, "digits")

    def num_classes(self) -> int:
        return NUM_CLASSES[self.dataset()]

    def reward_data(self) -> DDPMConfig:
        """The images r's classifier is trained on."""
        return REWARD_CLASSIFIER_DATA[self.dataset()]

    def reward_classifier(self) -> ClassifierConfig:
        return REWARD_CLASSIFIER[self.dataset()]

    def image_generator_config(self) -> VAEConfig | DDPMConfig:
        """The VAE of a VAE generator, the DDPM of ddim_digits."""
        return {"vae_digits": self.vae, "vae_color_dsprites": self.color_dsprites_vae}.get(self.generator, self.prior)

    def sampler_config(self) -> SamplerConfig:
        """`sampler` with this config's iteration budget and evaluation size."""
        return self.sampler.model_copy(
            update={"total_iters": self.total_iters, "eval_every": self.eval_every, "eval_samples": self.eval_samples}
        )

    def smoke(self) -> OutsourcedConfig:
        """The same, tiny: a barely fitted flow and a few iterations."""
        sampler = self.sampler.model_copy(update={"num_steps": 10, "batch_size": 64})
        flow = self.flow.model_copy(update={"fit_iters": 50})
        vae = self.vae.model_copy(update={"train_iters": 50})
        color_dsprites_vae = self.color_dsprites_vae.model_copy(update={"train_iters": 50})
        mcmc = self.mcmc.model_copy(update={"num_chains": 32, "burn_in": 5})
        run = {"total_iters": 20, "eval_every": 10, "eval_samples": 200, "reference_samples": 5_000}
        models = {"flow": flow, "vae": vae, "color_dsprites_vae": color_dsprites_vae, "prior": self.prior.smoke()}
        models |= {"sampler": sampler, "mcmc": mcmc}
        return self.model_copy(update=models | run)

    @property
    def generator_seed(self) -> int:
        """The seed the generator is fitted with (flow.seed, vae_seed or prior_seed); also the reference draws'."""
        return (
            self.vae_seed
            if self.generator in VAE_GENERATORS
            else {"flow2d": self.flow.seed}.get(self.generator, self.prior_seed)
        )

    def generator_key(self) -> dict[str, Any]:
        """What determines the fitted generator state (and the classifier, fixed by the code): the generator's
        training fields and seed, and GENERATOR_FORMAT. Equal keys, equal states; the cache's key."""
        if self.generator == "flow2d":
            fields = {"flow": self.flow.model_dump(mode="json")}
        elif self.generator in VAE_GENERATORS:
            vae = self.image_generator_config().model_dump(mode="json", exclude=set(VAE_NOT_TRAINING_FIELDS))
            fields = {"vae": vae, "vae_seed": self.vae_seed}
        else:
            prior = self.prior.model_dump(mode="json", exclude=set(NOT_TRAINING_FIELDS))
            fields = {"prior": prior, "prior_seed": self.prior_seed}
        return {"generator": self.generator, "format": GENERATOR_FORMAT} | fields

    def latent_shape(self) -> list[int]:
        """The shape of z: 2, the VAE's latent, or the DDPM's image (x_K)."""
        if self.generator == "flow2d":
            return [2]
        if self.generator in VAE_GENERATORS:
            return list(self.image_generator_config().latent_shape)
        return [self.prior.channels, self.prior.image_size, self.prior.image_size]
