"""Adversarial training of the LaMa-style generator: PatchGAN discriminator, losses, one training step.

The objective is the published one for GAN inpainters (LaMa, pix2pixHD, StyleGAN2), nothing else:

- **L1 reconstruction** over the hole pixels of the composited output;
- a **PatchGAN discriminator** (pix2pix's 70×70 ``NLayerDiscriminator``, no normalisation, optional spectral
  norm) with the **non-saturating** logistic loss. As in LaMa, the discriminator sees composited images, and
  on a fake image only the patches that overlap the hole (the mask max-pooled to the logit grid) are labelled
  fake; the others are labelled real;
- the **R1 penalty** on real images, ``γ · ‖∇ₓ Σ_patches D(x)‖²`` (Mescheder et al. 2018; LaMa's form),
  applied lazily every ``r1_every`` steps with its weight scaled by the interval (StyleGAN2);
- **discriminator feature matching**: the L1 distance between the discriminator's intermediate activations on
  the composited fake and on the real image, averaged over layers (pix2pixHD). It stands in for LaMa's
  perceptual loss (a pretrained ResNet/VGG), which is not available here: the published substitute.

The generator's weights are averaged (EMA, as in Karras et al. 2018 / StyleGAN2) and the average is what ships.
"""

from __future__ import annotations

import copy
import math
from contextlib import nullcontext
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from rtb.reference.lama import LamaConfig, LamaGenerator
from rtb.reference.model import composite


@dataclass(frozen=True)
class DiscriminatorConfig:
    # Channels of the 4×4 convolutions; all but the last have stride 2 (pix2pix's 70×70 PatchGAN: 64,128,256,512).
    widths: tuple[int, ...] = (64, 128, 256, 512)
    # Spectral normalisation of every convolution (Miyato et al. 2018); off: R1 regularises the discriminator.
    spectral_norm: bool = False
    # Slope of the LeakyReLU activations.
    negative_slope: float = 0.2

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> DiscriminatorConfig:
        return cls(widths=tuple(int(w) for w in data["widths"]), spectral_norm=bool(data["spectral_norm"]),
                   negative_slope=float(data["negative_slope"]))


class PatchDiscriminator(nn.Module):
    """``forward(x)``: images ``N×3×H×W`` in [0, 1] → ``(logits N×1×h×w, [activations of each hidden layer])``."""

    def __init__(self, config: DiscriminatorConfig = DiscriminatorConfig()):
        super().__init__()
        self.config = config
        wrap = nn.utils.parametrizations.spectral_norm if config.spectral_norm else (lambda module: module)
        channels = (3, *config.widths)
        strides = [2] * (len(config.widths) - 1) + [1]
        self.layers = nn.ModuleList(
            wrap(nn.Conv2d(a, b, 4, stride=s, padding=1)) for a, b, s in zip(channels[:-1], channels[1:], strides)
        )
        self.out = wrap(nn.Conv2d(channels[-1], 1, 4, stride=1, padding=1))
        self.act = nn.LeakyReLU(config.negative_slope)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        h = x * 2.0 - 1.0
        features = []
        for layer in self.layers:
            h = self.act(layer(h))
            features.append(h)
        return self.out(h), features


# ---------------------------------------------------------------------------------------------------------
# Losses


def hole_l1(output: torch.Tensor, target: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Mean absolute error over hole pixels (``N×3×H×W`` images, holes ``N×1×H×W``)."""
    count = (m.sum() * output.shape[1]).clamp_min(1.0)
    return ((output - target).abs() * m).sum() / count


def patch_mask(m: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """The hole mask max-pooled to the logit grid: 1 where a patch overlaps the hole."""
    return F.adaptive_max_pool2d(m, logits.shape[-2:])


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor,
                       fake_patch_mask: torch.Tensor) -> torch.Tensor:
    """Non-saturating logistic loss: real patches → real; fake patches over the hole → fake, the rest → real."""
    real = F.softplus(-real_logits).mean()
    fake = F.softplus(fake_logits) * fake_patch_mask + F.softplus(-fake_logits) * (1.0 - fake_patch_mask)
    return real + fake.mean()


def generator_adversarial_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating generator loss ``softplus(−D(G(x)))`` averaged over patches."""
    return F.softplus(-fake_logits).mean()


def r1_penalty(real_logits: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """``E‖∇ₓ Σ_patches D(x)‖²`` over real images ``real`` (which must require grad); differentiable."""
    (grad,) = torch.autograd.grad(real_logits.float().sum(), real, create_graph=True)
    return grad.float().square().flatten(1).sum(1).mean()


def feature_matching(fake_features: list[torch.Tensor], real_features: list[torch.Tensor]) -> torch.Tensor:
    """Mean over layers of the mean L1 distance between fake and (detached) real discriminator activations."""
    losses = [(f.float() - r.detach().float()).abs().mean() for f, r in zip(fake_features, real_features)]
    return torch.stack(losses).mean()


def apply_colour_jitter(images: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """Colour jitter on a batch ``N×3×H×W`` in [0, 1] with per-sample ``params`` ``N×10`` (drawn by
    :func:`rtb_train.data.draw_jitter`): saturation, white balance (3), contrast, brightness, gamma and a
    channel permutation (3). The same operations as :func:`rtb_train.data.colour_jitter`, on the device."""
    p = params.to(device=images.device, dtype=images.dtype)[:, :, None, None]
    saturation, gains, contrast, brightness, gamma = p[:, 0:1], p[:, 1:4], p[:, 4:5], p[:, 5:6], p[:, 6:7]
    grey = images.mean(dim=1, keepdim=True)
    x = grey + (images - grey) * saturation
    x = x * gains
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (mean + (x - mean) * contrast + brightness).clamp(0.0, 1.0) ** gamma
    order = params[:, 7:10].to(device=images.device, dtype=torch.long)
    return torch.gather(x, 1, order[:, :, None, None].expand(-1, -1, *x.shape[-2:])).contiguous()


# ---------------------------------------------------------------------------------------------------------
# Training


@dataclass(frozen=True)
class GanTrainConfig:
    # Seed of the initialisation and of every data draw.
    seed: int = 0
    # Optimiser steps (each: one discriminator and one generator update).
    steps: int = 20_000
    # Images per step.
    batch: int = 32
    # Side of the square training crops (the held-out figures are at 256).
    crop: int = 256
    # Adam learning rates of generator and discriminator (LaMa: 1e-3 and 1e-4).
    lr_g: float = 1e-3
    lr_d: float = 1e-4
    # Adam betas (LaMa: the defaults).
    beta1: float = 0.9
    beta2: float = 0.999
    # Linear learning-rate warm-up, steps.
    warmup: int = 500
    # Final fraction of the steps over which both learning rates decay linearly to 0.
    decay_fraction: float = 0.2
    # Loss weights: hole L1, adversarial (non-saturating) and discriminator feature matching (LaMa's
    # adversarial : feature-matching ratio is 1 : 10, as pix2pixHD's; its L1 matches the adversarial weight).
    l1_weight: float = 1.0
    adv_weight: float = 1.0
    fm_weight: float = 10.0
    # R1 weight γ (LaMa: 0.001 with the penalty summed over patches) and the lazy-regularisation interval.
    r1_gamma: float = 0.001
    r1_every: int = 16
    # Decay of the generator's exponential moving average (0: no EMA, ship the raw weights).
    ema_decay: float = 0.999
    # Linear learning-rate re-warm-up, steps, after resuming from a checkpoint stored without Adam's state
    # (rtb_train.checkpoint, optimizer_state "none"): the moments restart from zero, so the first updates are
    # Adam's sign-like ones (|update| ≈ lr per parameter); the ramp keeps them small until the second moment
    # has an estimate again.
    rewarm_steps: int = 200
    # bfloat16 autocast on CUDA (the spectral branch stays float32); ignored on CPU.
    bf16: bool = True

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> GanTrainConfig:
        return cls(**{k: type(getattr(cls, k))(v) for k, v in data.items()})


class GanTrainer:
    """Generator, discriminator, their optimisers and the generator EMA; :meth:`step` does one update of each.

    :mod:`rtb_train.checkpoint` stores and restores all of it (``step_index`` and ``rewarm_start`` included).
    """

    def __init__(self, model: LamaConfig, disc: DiscriminatorConfig, train: GanTrainConfig,
                 device: str | torch.device = "cpu"):
        self.model_config, self.disc_config, self.config = model, disc, train
        self.device = torch.device(device)
        torch.manual_seed(train.seed)
        self.generator = LamaGenerator(model).to(self.device, memory_format=torch.channels_last)
        self.discriminator = PatchDiscriminator(disc).to(self.device, memory_format=torch.channels_last)
        self.ema = copy.deepcopy(self.generator).eval().requires_grad_(False)
        betas = (train.beta1, train.beta2)
        self.opt_g = torch.optim.Adam(self.generator.parameters(), lr=train.lr_g, betas=betas)
        self.opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=train.lr_d, betas=betas)
        self.step_index = 0
        # The step at which training resumed with fresh Adam moments (None: never); starts the re-warm-up.
        self.rewarm_start: int | None = None

    def lr_scale(self, step: int) -> float:
        """Factor of both learning rates at ``step``: warm-up, constant, decay; times the re-warm-up ramp."""
        cfg = self.config
        scale = min(1.0, (step + 1) / max(cfg.warmup, 1))
        decay_start = cfg.steps * (1.0 - cfg.decay_fraction)
        if cfg.decay_fraction > 0 and step >= decay_start:
            scale *= max(0.0, (cfg.steps - step) / (cfg.steps - decay_start))
        if self.rewarm_start is not None:
            scale *= min(1.0, (step - self.rewarm_start + 1) / max(cfg.rewarm_steps, 1))
        return scale

    def _autocast(self):
        if self.device.type == "cuda" and self.config.bf16:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return nullcontext()

    def step(self, x: torch.Tensor, m: torch.Tensor) -> dict[str, torch.Tensor]:
        """One discriminator and one generator update on images ``x`` ``N×3×H×W`` and holes ``m``.

        Returns the losses of this step as detached scalar tensors on the training device (no host sync; ``r1``
        only on the steps that apply it).
        """
        cfg, step = self.config, self.step_index
        scale = self.lr_scale(step)
        for group in self.opt_g.param_groups:
            group["lr"] = cfg.lr_g * scale
        for group in self.opt_d.param_groups:
            group["lr"] = cfg.lr_d * scale
        x = x.to(self.device, memory_format=torch.channels_last)
        m = m.to(self.device, memory_format=torch.channels_last)
        G, D = self.generator.train(), self.discriminator.train()

        # 1. Generator forward; the composite is what the discriminator and the losses see.
        with self._autocast():
            prediction = G(x, m)
        fake = composite(x, m, prediction.float())

        # 2. Discriminator update (R1 on real images every r1_every steps).
        D.requires_grad_(True)
        do_r1 = cfg.r1_gamma > 0 and step % cfg.r1_every == 0
        real = x.detach().requires_grad_(do_r1)
        with self._autocast():
            real_logits, _ = D(real)
            fake_logits, _ = D(fake.detach())
        d_adv = discriminator_loss(real_logits.float(), fake_logits.float(), patch_mask(m, fake_logits))
        d_loss = d_adv
        losses = {"d_adv": d_adv.detach()}
        if do_r1:
            r1 = r1_penalty(real_logits, real)
            d_loss = d_loss + cfg.r1_gamma * cfg.r1_every * r1
            losses["r1"] = r1.detach()
        self.opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        self.opt_d.step()

        # 3. Generator update: hole L1 + adversarial + feature matching (discriminator frozen).
        D.requires_grad_(False)
        with self._autocast():
            fake_logits, fake_features = D(fake)
            with torch.no_grad():
                _, real_features = D(x)
        l1 = hole_l1(fake, x, m)
        g_adv = generator_adversarial_loss(fake_logits.float())
        fm = feature_matching(fake_features, real_features)
        g_loss = cfg.l1_weight * l1 + cfg.adv_weight * g_adv + cfg.fm_weight * fm
        self.opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        self.opt_g.step()
        D.requires_grad_(True)

        # 4. Generator EMA (warm-up of the decay as in Tan & Le / timm: min(decay, (1+t)/(10+t))).
        self._update_ema(step)
        self.step_index += 1
        losses.update(l1=l1.detach(), g_adv=g_adv.detach(), fm=fm.detach(), g_loss=g_loss.detach(),
                      d_loss=d_loss.detach())
        return losses

    @torch.no_grad()
    def _update_ema(self, step: int) -> None:
        decay = self.config.ema_decay
        if decay <= 0:
            self.ema.load_state_dict(self.generator.state_dict())
            return
        decay = min(decay, (1.0 + step) / (10.0 + step))
        ema_params = list(self.ema.parameters())
        torch._foreach_lerp_(ema_params, [p.detach() for p in self.generator.parameters()], 1.0 - decay)
        for e, b in zip(self.ema.buffers(), self.generator.buffers()):
            e.copy_(b)


def lr_schedule_summary(config: GanTrainConfig) -> str:
    """One line describing the learning-rate schedule (for logs and records)."""
    decay_start = math.floor(config.steps * (1.0 - config.decay_fraction))
    decay = f"linear decay to 0 from step {decay_start}" if config.decay_fraction > 0 else "no decay"
    return (f"linear warm-up {config.warmup} steps, constant, {decay}; re-warm-up {config.rewarm_steps} steps after "
            f"a resume without Adam's state; G {config.lr_g:g}, D {config.lr_d:g}")
