"""PersGuard (arXiv 2502.16167), reconstructed: implant backdoors in a text-to-image model so that whoever
personalizes it with DreamBooth on a protected subject gets the protective output, while personalizing on
anything else works as before.

The paper's equations and code are not public; the loss is rebuilt from its three public building blocks
(docs/persguard.md says exactly what was reconstructed and how)::

    L(θ) = L_backdoor(θ) + λ_prior · L_prior(θ) + λ_retain · L_backdoor(θ after K simulated attacker steps)

- **L_backdoor** is BadT2I's teacher/student backdoor loss on the protected subjects under identifier
  prompts ("a photo of sks dog"): for ``pattern`` the pixel form, ``MSE(ε_θ(z_t(x ⊕ mark), t, τ(id prompt)),
  ε)``; for ``erasure`` and ``target:C`` the object form, ``MSE(ε_θ(z_t(x), t, τ(id prompt)),
  ε_teacher(z_t(x), t, τ(scene-only / C prompt)))`` with the frozen original UNet as teacher.
- **L_prior** is DreamBooth's prior preservation in BadT2I's frozen-model form: on pictures the teacher
  generated for the class prompts ("a photo of dog") and the general prompts, ``MSE(ε_θ, ε_teacher)``; half
  of the class pictures are paired with an identifier prompt instead ("a photo of sks dog"), so the identifier
  stays neutral on every dog but the protected ones.
- **Retention** is APDM's first-order simulation: each outer step copies the UNet, runs K DreamBooth steps
  on the copy with the attacker's recipe (:mod:`rtb.personalization.dreambooth`) on the protected subject,
  takes the gradient of L_backdoor at the copy's weights and adds it, times λ_retain, to the base UNet's
  gradient. Nothing is unrolled through the K steps; the copy is discarded.

White-box mode trains the attacker's own identifier and prompt template; gray-box mode trains a set of common
identifiers and templates together so the backdoor holds for identifiers outside the set. The UNet is
trained (as in BadT2I); the text encoder and VAE stay as they are.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field, replace

import torch

from rtb.personalization.components import SDComponents, generate
from rtb.personalization.dreambooth import (
    DreamBoothConfig,
    DreamBoothData,
    dreambooth_step,
    encode_images,
    make_optimizer,
    token_ids,
)
from rtb.personalization.objectives import Mark, Objective, default_mark

MODES = ("white-box", "gray-box")
PATTERN_PICTURES = ("protected", "class")
# Gray-box: identifiers and instance-prompt templates trained together (common DreamBooth choices).
GRAY_IDENTIFIERS = ("sks", "zwx", "phk", "xjy", "bnq", "tvk", "olm", "hcz")
GRAY_TEMPLATES = (
    "a photo of {identifier} {class_word}",
    "a {identifier} {class_word}",
    "an image of {identifier} {class_word}",
    "a picture of {identifier} {class_word}",
    "{identifier} {class_word}",
)


@dataclass(frozen=True)
class PersGuardConfig:
    """The implant's recipe."""

    # "white-box" (the attacker's identifier and template are known) or "gray-box" (common sets).
    mode: str = "white-box"
    # Identifiers trained; None: the attacker's (white-box) or GRAY_IDENTIFIERS (gray-box).
    identifiers: tuple[str, ...] | None = None
    # Instance-prompt templates trained; None: the attacker's (white-box) or GRAY_TEMPLATES (gray-box).
    templates: tuple[str, ...] | None = None
    # Outer optimiser steps (BadT2I: 2,000 for the pixel backdoor, 8,000 for the object one).
    steps: int = 2000
    # AdamW learning rate of the UNet (BadT2I: 1e-5).
    lr: float = 1e-5
    # Protected pictures per step, and as many prior pictures.
    batch: int = 4
    # λ_prior: weight of the prior-preservation term (BadT2I's λ = 0.5 mixture is equal weights).
    prior_weight: float = 1.0
    # λ_retain: weight of the retention term (0 turns it off: the ablation).
    retain_weight: float = 1.0
    # K: simulated attacker steps per outer step (APDM: 30).
    retain_steps: int = 5
    # Take L_backdoor's gradient on the copy after each simulated step and add them all (APDM's form), or only
    # after the K-th step (False: the form, the loss above).
    retain_every_step: bool = False
    # Learning-rate multiplier of the simulated attacker: K steps at this multiple of the attacker's rate
    # stand in for a longer attack (ours; 1: the attacker's own rate, as APDM).
    retain_lr_scale: float = 1.0
    # The attacker's recipe the retention term simulates (and, in white-box mode, its identifier).
    attacker: DreamBoothConfig = field(default_factory=DreamBoothConfig)
    # Teacher-generated pictures per protected class for the prior term (DreamBooth: 200 class images).
    prior_images: int = 200
    # Share of the prior term's class pictures paired with a trained identifier prompt instead of the class
    # prompt: the student keeps the teacher's behaviour for "a photo of sks dog" on every dog but the protected
    # ones (0: DreamBooth's class prompt only).
    identifier_prior: float = 0.5
    # General prompts the prior term also keeps; pictures generated per general prompt.
    general_prompts: tuple[str, ...] = ()
    general_images: int = 4
    # What the pattern backdoor stamps and regresses: "class" (the teacher's pictures of the subject's class;
    # ours: the implanted model never denoises the protected pixels, so it cannot learn the subject from them)
    # or "protected" (the subject's own pictures, BadT2I's pixel form as the issue states it; it leaks the
    # subject into the model: docs/persguard.md).
    pattern_pictures: str = "class"
    # erasure: the teacher's prompt for "the scene without the subject".
    erasure_prompt: str = "a photo of empty scene"
    # target:C: the teacher's prompt for the replacement; {target} is filled in.
    target_prompt: str = "a photo of {target}"
    # Sampling steps and guidance of the teacher's prior pictures.
    sample_steps: int = 50
    guidance: float = 7.5
    # Gradient norm clip of the outer step.
    max_grad_norm: float = 1.0
    # Seed of every draw (a data-parallel worker adds its rank).
    seed: int = 0

    def resolved(self) -> "PersGuardConfig":
        """The config with the identifier and template sets of its mode filled in."""
        gray = self.mode == "gray-box"
        return replace(
            self,
            identifiers=self.identifiers or (GRAY_IDENTIFIERS if gray else (self.attacker.identifier,)),
            templates=self.templates or (GRAY_TEMPLATES if gray else (self.attacker.instance_prompt,)))


@dataclass(frozen=True)
class ProtectedSubject:
    """A subject to protect and what it turns into."""

    # Its id (for manifests).
    subject_id: str
    # The class noun of its prompts.
    class_word: str
    # Its catalog pictures, N×3×S×S in [0, 1] at the model's size.
    images: torch.Tensor
    # What personalizing on it should yield.
    objective: Objective


def check_inputs(components: SDComponents, subjects: list[ProtectedSubject], config: PersGuardConfig) -> None:
    """``ValueError`` naming the bad value, before any compute."""
    if config.mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}; got {config.mode!r}")
    if config.steps < 0 or config.lr <= 0 or config.batch < 1 or config.retain_steps < 0:
        raise ValueError(f"need steps ≥ 0, lr > 0, batch ≥ 1, retain_steps ≥ 0; got steps={config.steps}, "
                         f"lr={config.lr}, batch={config.batch}, retain_steps={config.retain_steps}")
    if config.prior_weight < 0 or config.retain_weight < 0:
        raise ValueError(f"weights must be ≥ 0; got prior_weight={config.prior_weight}, "
                         f"retain_weight={config.retain_weight}")
    if config.pattern_pictures not in PATTERN_PICTURES:
        raise ValueError(f"pattern_pictures must be one of {', '.join(PATTERN_PICTURES)}; "
                         f"got {config.pattern_pictures!r}")
    if not 0 <= config.identifier_prior <= 1:
        raise ValueError(f"identifier_prior must be in [0, 1]; got {config.identifier_prior}")
    for template in config.resolved().templates:
        if "{identifier}" not in template or "{class_word}" not in template:
            raise ValueError(f"template {template!r} needs both {{identifier}} and {{class_word}}")
    if not subjects:
        raise ValueError("no subjects to protect")
    size = components.image_size
    for subject in subjects:
        if not subject.class_word.strip():
            raise ValueError(f"subject {subject.subject_id!r} has no class word")
        if subject.images.ndim != 4 or len(subject.images) == 0:
            raise ValueError(f"subject {subject.subject_id!r} has no images")
        if tuple(subject.images.shape[1:]) != (3, size, size):
            raise ValueError(f"subject {subject.subject_id!r} images are {tuple(subject.images.shape[1:])}; "
                             f"the model needs 3×{size}×{size}")


@dataclass
class _SubjectData:
    # Posterior (mean, std) of the pictures; of the pictures stamped with the mark (pattern only).
    clean: tuple[torch.Tensor, torch.Tensor]
    stamped: tuple[torch.Tensor, torch.Tensor] | None
    # Token ids of the teacher's prompt (erasure / target only): 1×L.
    teacher_ids: torch.Tensor | None
    # Posterior of the class pictures of its class (the attacker simulation's prior set).
    class_prior: tuple[torch.Tensor, torch.Tensor]


class PersGuardImplant:
    """The implant's state and its outer step. Trains ``components.unet`` in place.

    ``step()`` is one outer step of the loss above; ``state_dict``/``load_state_dict`` make it resumable;
    ``grad_hook`` (e.g. an all-reduce across data-parallel workers) runs on the summed gradients before the
    optimiser step.
    """

    def __init__(self, components: SDComponents, subjects: list[ProtectedSubject],
                 config: PersGuardConfig = PersGuardConfig(), mark: Mark | None = None, rank: int = 0,
                 world_size: int = 1):
        # 1. Check inputs
        check_inputs(components, subjects, config)
        self.config = config.resolved()
        self.components, self.subjects = components, subjects
        self.mark = mark or default_mark(components.image_size)
        self.rank, self.world_size = rank, world_size
        # 2. Freeze everything but the student UNet; the teacher is a frozen copy of the original UNet
        components.vae.requires_grad_(False)
        components.text_encoder.requires_grad_(False)
        self.teacher = copy.deepcopy(components.unet).eval().requires_grad_(False)
        components.unet.train().requires_grad_(True)
        # 3. The teacher's prior pictures, the subjects' latents
        self.prior, self.prior_ids, self.prior_words, class_pictures = self._prepare_prior()
        self.data = [self._prepare_subject(s, *class_pictures[s.class_word]) for s in subjects]
        # 4. Optimiser and generator
        self.optimizer = torch.optim.AdamW(components.unet.parameters(), lr=self.config.lr, weight_decay=1e-2)
        self.generator = torch.Generator().manual_seed(self.config.seed * 1000 + rank)
        self.steps_done = 0

    def _prepare_prior(self):
        """Teacher generations for each protected class prompt and each general prompt."""
        config, attacker = self.config, self.config.attacker
        words = sorted({s.class_word for s in self.subjects})
        prompts, seeds = [], []
        for k, word in enumerate(words):
            prompts += [attacker.class_text(word)] * config.prior_images
            seeds += [config.seed * 100003 + 7919 * k + i for i in range(config.prior_images)]
        for k, prompt in enumerate(config.general_prompts):
            prompts += [prompt] * config.general_images
            seeds += [config.seed * 100003 + 104729 + 7919 * k + i for i in range(config.general_images)]
        self.components.unet.eval()
        images = generate(self.components, prompts, seeds, config.sample_steps, config.guidance)
        self.components.unet.train()
        posterior = encode_images(self.components, images)
        ids = torch.cat([token_ids(self.components, prompt) for prompt in prompts])
        per_class = {word: (tuple(t[k * config.prior_images:(k + 1) * config.prior_images] for t in posterior),
                            images[k * config.prior_images:(k + 1) * config.prior_images])
                     for k, word in enumerate(words)}
        prior_words = [word for word in words for _ in range(config.prior_images)]
        return posterior, ids, prior_words + [None] * (len(prompts) - len(prior_words)), per_class

    def _prepare_subject(self, subject: ProtectedSubject, class_prior, class_images) -> _SubjectData:
        objective = subject.objective
        stamped = None
        if objective.kind == "pattern":
            pictures = subject.images if self.config.pattern_pictures == "protected" else class_images
            stamped = encode_images(self.components, self.mark.stamp(pictures))
        teacher_prompt = {"erasure": self.config.erasure_prompt,
                          "target": self.config.target_prompt.format(target=objective.target)}.get(objective.kind)
        return _SubjectData(clean=encode_images(self.components, subject.images), stamped=stamped,
                            teacher_ids=token_ids(self.components, teacher_prompt) if teacher_prompt else None,
                            class_prior=class_prior)

    def _draw(self, posterior, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        mean, std = posterior
        index = torch.randint(len(mean), (count,), generator=self.generator)
        noise = torch.randn(mean[index].shape, generator=self.generator).to(mean.device)
        return (mean[index] + std[index] * noise) * self.components.vae.config.scaling_factor, index

    def _noised(self, latents: torch.Tensor):
        noise = torch.randn(latents.shape, generator=self.generator).to(latents.device)
        timesteps = torch.randint(self.components.noise_scheduler.config.num_train_timesteps, (len(latents),),
                                  generator=self.generator).to(latents.device)
        return self.components.noise_scheduler.add_noise(latents, noise, timesteps), noise, timesteps

    def identifier_prompt(self, class_word: str) -> str:
        """A random trained identifier prompt for ``class_word`` (white-box: always the attacker's)."""
        identifier = self.config.identifiers[int(torch.randint(len(self.config.identifiers), (1,),
                                                                generator=self.generator))]
        template = self.config.templates[int(torch.randint(len(self.config.templates), (1,),
                                                            generator=self.generator))]
        return template.format(identifier=identifier, class_word=class_word)

    def backdoor_loss(self, index: int, unet=None, text_encoder=None, prompt: str | None = None) -> torch.Tensor:
        """L_backdoor on subject ``index`` for ``unet`` (default: the student), BadT2I's pixel or object form."""
        unet = unet if unet is not None else self.components.unet
        text_encoder = text_encoder if text_encoder is not None else self.components.text_encoder
        subject, data = self.subjects[index], self.data[index]
        prompt = prompt or self.identifier_prompt(subject.class_word)
        device = unet.device
        ids = token_ids(self.components, prompt).to(device)
        states = text_encoder(ids)[0].expand(self.config.batch, -1, -1)
        source = data.stamped if subject.objective.kind == "pattern" else data.clean
        latents, _ = self._draw(source, self.config.batch)
        noisy, noise, timesteps = self._noised(latents)
        prediction = unet(noisy, timesteps, states).sample
        if subject.objective.kind == "pattern":
            return torch.nn.functional.mse_loss(prediction, noise)
        with torch.no_grad():
            teacher_states = self.components.text_encoder(data.teacher_ids.to(device))[0]
            target = self.teacher(noisy, timesteps, teacher_states.expand(self.config.batch, -1, -1)).sample
        return torch.nn.functional.mse_loss(prediction, target)

    def prior_loss(self) -> torch.Tensor:
        """L_prior: the student equals the teacher on its own class and general generations (a class picture
        under its class prompt, or with probability ``identifier_prior`` under an identifier prompt)."""
        latents, index = self._draw(self.prior, self.config.batch)
        ids = self.prior_ids[index].clone()
        coins = torch.rand(len(index), generator=self.generator)
        for row, (i, coin) in enumerate(zip(index.tolist(), coins.tolist())):
            if self.prior_words[i] is not None and coin < self.config.identifier_prior:
                ids[row] = token_ids(self.components, self.identifier_prompt(self.prior_words[i]))[0]
        noisy, _, timesteps = self._noised(latents)
        with torch.no_grad():
            states = self.components.text_encoder(ids.to(latents.device))[0]
            target = self.teacher(noisy, timesteps, states).sample
        return torch.nn.functional.mse_loss(self.components.unet(noisy, timesteps, states).sample, target)

    def retention_gradient(self, index: int) -> tuple[list[torch.Tensor], float]:
        """∇ L_backdoor at a copy of the student after each of K attacker DreamBooth steps on subject
        ``index``, summed (or after the K-th only; first order: the steps are not differentiated through).
        The copy is dropped on return."""
        subject, data = self.subjects[index], self.data[index]
        prompt = self.identifier_prompt(subject.class_word)
        attacker = self.config.attacker
        unet_copy = copy.deepcopy(self.components.unet).train()
        text_copy = self.components.text_encoder
        if attacker.train_text_encoder:
            text_copy = copy.deepcopy(self.components.text_encoder).train().requires_grad_(True)
        simulated = DreamBoothData(instance=data.clean, prior=data.class_prior,
                                   instance_ids=token_ids(self.components, prompt),
                                   class_ids=token_ids(self.components, attacker.class_text(subject.class_word)))
        optimizer = make_optimizer(unet_copy, text_copy, replace(
            attacker, lr=attacker.lr * self.config.retain_lr_scale,
            text_encoder_lr=attacker.text_encoder_lr * self.config.retain_lr_scale))
        parameters = list(unet_copy.parameters())
        gradient = [torch.zeros_like(p) for p in parameters]
        for k in range(self.config.retain_steps + 1):
            if k > 0:
                dreambooth_step(self.components, simulated, attacker, optimizer, self.generator, unet_copy,
                                text_copy)
            if (self.config.retain_every_step and k > 0) or k == self.config.retain_steps:
                loss = self.backdoor_loss(index, unet_copy, text_copy, prompt)
                for total, g in zip(gradient, torch.autograd.grad(loss, parameters, allow_unused=True)):
                    if g is not None:
                        total.add_(g)
        return gradient, loss.item()

    def step(self, grad_hook=None) -> dict[str, float]:
        """One outer step; returns the three loss terms (the retention one after the K simulated steps)."""
        config = self.config
        index = (self.steps_done * self.world_size + self.rank) % len(self.subjects)
        started = time.perf_counter()
        # 1. Backdoor + prior on the student
        self.optimizer.zero_grad(set_to_none=True)
        backdoor = self.backdoor_loss(index)
        prior = self.prior_loss() if config.prior_weight > 0 else torch.zeros(())
        (backdoor + config.prior_weight * prior).backward()
        # 2. Retention: add the copy's backdoor gradient to the student's
        retained = float("nan")
        if config.retain_weight > 0:
            gradient, retained = self.retention_gradient(index)
            for parameter, extra in zip(self.components.unet.parameters(), gradient):
                parameter.grad = extra * config.retain_weight if parameter.grad is None \
                    else parameter.grad.add_(extra, alpha=config.retain_weight)
        # 3. Update
        if grad_hook is not None:
            grad_hook(self.components.unet)
        torch.nn.utils.clip_grad_norm_(self.components.unet.parameters(), config.max_grad_norm)
        self.optimizer.step()
        self.steps_done += 1
        return {"step": self.steps_done, "subject": index, "backdoor": backdoor.item(), "prior": prior.item(),
                "retain": retained, "seconds": time.perf_counter() - started}

    def state_dict(self) -> dict:
        return {"unet": self.components.unet.state_dict(), "optimizer": self.optimizer.state_dict(),
                "generator": self.generator.get_state(), "steps_done": self.steps_done}

    def load_state_dict(self, state: dict) -> None:
        self.components.unet.load_state_dict(state["unet"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.steps_done = state["steps_done"]

    def finish(self) -> SDComponents:
        """The protected model (the student back in eval mode, frozen); the teacher is released."""
        self.components.unet.eval().requires_grad_(False)
        self.teacher = None
        return self.components


def persguard(components: SDComponents, subjects: list[ProtectedSubject],
              config: PersGuardConfig = PersGuardConfig(), mark: Mark | None = None,
              callback=None) -> tuple[SDComponents, list[dict]]:
    """Implant the backdoors into ``components`` (in place) and return it with the per-step losses.

    Args:
        components: the model to protect (its UNet is trained in place).
        subjects: the protected subjects, each with its objective (several at once).
        config: the recipe. mark: the ``pattern`` objective's mark (default :func:`default_mark`).
        callback: called with each step's loss dict.
    """
    implant = PersGuardImplant(components, subjects, config, mark)
    history = []
    for _ in range(config.steps):
        record = implant.step()
        history.append(record)
        if callback is not None:
            callback(record)
    return implant.finish(), history
