"""The reconstruction half of :mod:`.trigger_synthesis` (its module docstring describes the method, steps 1-5):
what the flagged samples say about the trigger (:class:`Evidence`), the three forms a trigger is fitted in
(:class:`Reconstruction`), the fit itself (:func:`synthesise`), the choice among the forms (:func:`reconstruct`)
and the suspects a reconstruction points at (:func:`trigger_direction`, :func:`trigger_suspects`)."""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..hidden_count import choose_k
from ..proxies.entanglement import last_linear
from ..training import ImageBank
from ..triggers.wanet import identity_grid
from .task import Task

FORMS = ("mask", "additive", "warp")
EVAL_IMAGES = 1000  # clean validation images that score a reconstruction


@dataclass
class Reconstruction:
    """A reconstructed trigger in the bank's pixel scale ([0, 1] for uint8 images): a mask and pattern, or a
    sampling-grid offset (``flow``, ``[1, H, W, 2]`` in ``grid_sample`` units). ``target`` None: untargeted."""

    form: str
    target: int | None
    mask: torch.Tensor | None = None  # [1, 1, H, W] in [0, 1]
    pattern: torch.Tensor | None = None  # [1, C, H, W]: blended in (mask) or added (additive)
    flow: torch.Tensor | None = None
    low: float = 0.0  # the pixel range an additive stamp is clamped to
    high: float = 1.0

    def stamp(self, pixels: torch.Tensor) -> torch.Tensor:
        """``pixels`` ``[B, C, H, W]`` (pixel scale) with the trigger applied."""
        if self.form == "mask":
            return (1 - self.mask) * pixels + self.mask * self.pattern
        if self.form == "additive":
            return (pixels + self.pattern).clamp(self.low, self.high)
        return warp(pixels, self.flow)

    def size(self) -> dict:
        """The mask's L1 size (pixels and fraction of the image), or the mean displacement in pixels."""
        if self.form == "mask":
            total = float(self.mask.sum())
            return {"mask_pixels": round(total, 2), "mask_fraction": round(total / self.mask[0, 0].numel(), 4)}
        if self.form == "additive":
            return {"mean_abs_change": round(float(self.pattern.abs().mean()), 4)}
        return {"warp_pixels": round(float(flow_pixels(self.flow).mean()), 3)}

    def detached(self) -> "Reconstruction":
        return dataclasses.replace(self, **{f: None if v is None else v.detach() for f, v in
                                            (("mask", self.mask), ("pattern", self.pattern), ("flow", self.flow))})


def warp(pixels: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Resample ``pixels`` at the identity grid plus ``flow`` (bilinear, zero padding, as WaNet stamps)."""
    _, _, h, w = pixels.shape
    grid = (identity_grid(h, w).to(pixels.device) + flow).clamp(-1, 1)
    return F.grid_sample(pixels, grid.expand(len(pixels), -1, -1, -1), align_corners=True)


def flow_pixels(flow: torch.Tensor) -> torch.Tensor:
    """The displacement's length in pixels at every position ``[1, H, W]``."""
    _, h, w, _ = flow.shape
    scale = torch.tensor([(w - 1) / 2, (h - 1) / 2], device=flow.device)
    return (flow * scale).norm(dim=-1)


class PixelScale:
    """The bank's pixel scale and normalisation: a model reads ``(pixels - mean) / std``, where pixels are uint8
    images / 255 or a float bank's values as they are."""

    def __init__(self, bank: ImageBank):
        self.bank = bank
        if bank.images.dtype == torch.uint8:
            self.low, self.high = 0.0, 1.0
        else:
            self.low, self.high = float(bank.images.min()), float(bank.images.max())

    def pixels(self, indices: torch.Tensor) -> torch.Tensor:
        """Clean pixels of ``bank[indices]``: no trigger, no augmentation."""
        x = self.bank.images[indices.to(self.bank.device)]
        return x.float() / 255 if x.dtype == torch.uint8 else x.float()

    def normalise(self, pixels: torch.Tensor) -> torch.Tensor:
        return (pixels - self.bank.mean) / self.bank.std

    def unnormalise(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.bank.std + self.bank.mean


def attack_target(labels: torch.Tensor, num_classes: int) -> int | None:
    """The most common given label of the flagged samples, or None (untargeted) when none holds half of them."""
    counts = torch.bincount(labels.cpu(), minlength=num_classes)
    top = int(counts.argmax())
    return top if 2 * int(counts[top]) >= len(labels) else None


class Embedded:
    """``model``'s logits and penultimate embeddings in one forward pass (a hook on its last linear layer)."""

    def __init__(self, model: nn.Module):
        self.model, self.captured = model, []
        self.hook = last_linear(model).register_forward_hook(
            lambda _m, inputs, _o: self.captured.append(inputs[0].flatten(1)))

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.captured.clear()
        logits = self.model(x)
        return logits.float(), self.captured[-1].float()

    def close(self) -> None:
        self.hook.remove()


def attack_loss(logits: torch.Tensor, labels: torch.Tensor, target: int | None) -> torch.Tensor:
    """Per-sample loss of the attack: CE to the target, or (untargeted) -log(1 - p(own label))."""
    if target is not None:
        return F.cross_entropy(logits, torch.full_like(labels, target), reduction="none")
    own = F.softmax(logits, 1).gather(1, labels[:, None]).squeeze(1)
    return -torch.log1p(-own.clamp(max=1 - 1e-6))


def attack_success(logits: torch.Tensor, labels: torch.Tensor, target: int | None) -> torch.Tensor:
    predicted = logits.argmax(1)
    return predicted == target if target is not None else predicted != labels


def _parameters(form: str, shape: tuple[int, int, int], hp: dict, device) -> dict[str, torch.Tensor]:
    c, h, w = shape
    if form == "mask":  # a faint full-image mask and a grey pattern: no pixel is preferred
        return {"mask": torch.full((1, 1, h, w), -3.0, device=device, requires_grad=True),
                "pattern": torch.zeros((1, c, h, w), device=device, requires_grad=True)}
    if form == "additive":
        return {"pattern": torch.zeros((1, c, h, w), device=device, requires_grad=True)}
    return {"control": torch.zeros((1, 2, hp["warp_grid"], hp["warp_grid"]), device=device, requires_grad=True)}


def _build(form: str, raw: dict[str, torch.Tensor], scale: PixelScale, target: int | None,
           shape: tuple[int, int, int]) -> Reconstruction:
    span = scale.high - scale.low
    if form == "mask":
        pattern = scale.low + span * torch.sigmoid(raw["pattern"])
        return Reconstruction("mask", target, mask=torch.sigmoid(raw["mask"]), pattern=pattern)
    if form == "additive":
        return Reconstruction("additive", target, pattern=span * torch.tanh(raw["pattern"]), low=scale.low,
                              high=scale.high)
    _, h, w = shape
    flow = F.interpolate(raw["control"], size=(h, w), mode="bicubic", align_corners=True).permute(0, 2, 3, 1)
    return Reconstruction("warp", target, flow=flow)


def _size_penalty(recon: Reconstruction, hp: dict) -> torch.Tensor:
    if recon.form == "mask":
        return hp["mask_weight"] * recon.mask.mean()
    if recon.form == "additive":
        return hp["mask_weight"] * recon.pattern.abs().mean()
    return hp["warp_weight"] * flow_pixels(recon.flow).mean()


@dataclass
class Evidence:
    """What the flagged samples say about the trigger, and the clean images to compare them with.

    ``clean``/``clean_labels``: pixels the attack term stamps (outside the target class). ``reference``: clean
    pixels of the flagged samples' source classes (the target class for a clean-label attack, every class
    otherwise, chosen by which one's mean image S_f's is nearer); ``flagged_moments``: per-pixel mean and standard
    deviation of S_f as trained on. ``anchor``: the mean embedding of clean images of the target class (every class
    when untargeted); ``flagged_embedding``: S_f's mean embedding."""

    target: int | None
    clean: torch.Tensor
    clean_labels: torch.Tensor
    reference: torch.Tensor
    flagged_moments: tuple[torch.Tensor, torch.Tensor]
    anchor: torch.Tensor
    flagged_embedding: torch.Tensor
    source_classes: str
    clean_origin: str

    @property
    def direction(self) -> torch.Tensor:
        return F.normalize(self.flagged_embedding - self.anchor, dim=0)


def moments(pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return pixels.mean(0), pixels.std(0, unbiased=False)


def moment_gap(pixels: torch.Tensor, flagged: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Mean squared gap of per-pixel mean and standard deviation between ``pixels`` and the flagged samples'."""
    mean, std = moments(pixels)
    return ((mean - flagged[0]) ** 2).mean() + ((std - flagged[1]) ** 2).mean()


def synthesise(model: nn.Module, form: str, evidence: Evidence, scale: PixelScale, hp: dict,
               generator: torch.Generator) -> Reconstruction:
    """Optimise one form's trigger on the frozen ``model`` (:mod:`.trigger_synthesis`, step 3): attack loss on stamped
    clean images + embedding pull towards S_f (away from the clean target class) + per-pixel moment match of
    stamped reference images with S_f + the size penalty. ``generator`` (on the images' device) draws batches."""
    clean, labels, reference = evidence.clean, evidence.clean_labels, evidence.reference
    shape = tuple(clean.shape[1:])
    raw = _parameters(form, shape, hp, clean.device)
    optimiser = torch.optim.Adam(raw.values(), lr=hp["synth_lr"])
    frozen = copy.deepcopy(model).eval().requires_grad_(False)
    embedded = Embedded(frozen)
    anchor, direction = evidence.anchor.to(clean.device), evidence.direction.to(clean.device)
    batch = min(hp["synth_batch"], len(clean))
    try:
        for _ in range(hp["synth_steps"]):
            rows = torch.randint(0, len(clean), (batch,), device=clean.device, generator=generator)
            sources = torch.randint(0, len(reference), (batch,), device=clean.device, generator=generator)
            recon = _build(form, raw, scale, evidence.target, shape)
            logits, embedding = embedded(scale.normalise(recon.stamp(clean[rows])))
            loss = attack_loss(logits, labels[rows], evidence.target).mean()
            loss = loss + hp["embed_weight"] * (1 - F.normalize(embedding - anchor, dim=1) @ direction).mean()
            loss = loss + hp["pixel_weight"] * moment_gap(recon.stamp(reference[sources]), evidence.flagged_moments)
            loss = loss + _size_penalty(recon, hp)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
    finally:
        embedded.close()
    return _build(form, raw, scale, evidence.target, shape).detached()


@torch.no_grad()
def reconstruction_effect(model: nn.Module, recon: Reconstruction, pixels: torch.Tensor, labels: torch.Tensor,
                          scale: PixelScale, evidence: Evidence | None = None, batch_size: int = 512) -> dict:
    """Attack success of ``recon`` on ``pixels`` (clean images outside the target class); with ``evidence``, also
    the cosine of their mean embedding's shift from the clean anchor with S_f's shift (``similarity``) and the
    moment gap of stamped reference images with S_f (``pixel_gap``): what scores a form."""
    was_training = model.training
    model.eval()
    embedded = Embedded(model)
    success, embeddings = [], []
    try:
        for start in range(0, len(pixels), batch_size):
            logits, embedding = embedded(scale.normalise(recon.stamp(pixels[start:start + batch_size])))
            success.append(attack_success(logits, labels[start:start + batch_size], recon.target))
            embeddings.append(embedding)
    finally:
        embedded.close()
        model.train(was_training)
    result = {"attack_success": float(torch.cat(success).float().mean())}
    if evidence is not None:
        shift = torch.cat(embeddings).mean(0) - evidence.anchor.to(pixels.device)
        result["similarity"] = float(F.cosine_similarity(shift, evidence.direction.to(shift.device), dim=0))
        result["pixel_gap"] = float(moment_gap(recon.stamp(evidence.reference), evidence.flagged_moments))
    return result


def form_score(effect: dict) -> float:
    """Attack success x how far the stamped images' embeddings move the way S_f's do (cosine, floored at 0)."""
    return effect["attack_success"] * max(0.0, effect["similarity"])


def _draw(indices: torch.Tensor, count: int, seed: int) -> torch.Tensor:
    indices = indices.cpu()
    if len(indices) > count:
        indices = indices[torch.randperm(len(indices), generator=torch.Generator().manual_seed(seed))[:count]]
    return torch.sort(indices).values


def clean_sources(task: Task, target: int | None, count: int) -> tuple[torch.Tensor, torch.Tensor, str]:
    """(indices, their given labels, where from) of the clean images the attack term stamps (step 2). The
    reserve is never manipulated; in the retain set, a sample labelled as the target may be an undiscovered poison."""
    has_reserve = task.clean_idx is not None and len(task.clean_idx) > 0
    pool = (task.clean_idx if has_reserve else task.retain_idx).cpu()
    if target is not None:
        pool = pool[task.labels[pool.to(task.device)].cpu() != target]
    chosen = _draw(pool, count, task.seed + 27)
    return chosen, task.labels[chosen.to(task.device)], "clean reserve" if has_reserve else "retain set"


def validation_images(task: Task, target: int | None, scale: PixelScale, keep_target: bool = False
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Up to EVAL_IMAGES clean validation images (pixels, labels) outside the target class (only of it with
    ``keep_target``; every class when untargeted): the selection split, never test data."""
    labels = task.val_labels.cpu()
    keep = torch.ones(len(labels), dtype=torch.bool) if target is None else (labels == target) == keep_target
    order = _draw(torch.nonzero(keep).flatten(), EVAL_IMAGES, task.seed + 28)
    return scale.pixels(task.val_idx.cpu()[order]), labels[order].to(task.device)


def flagged_pixels(task: Task, scale: PixelScale) -> torch.Tensor:
    """S_f exactly as trained on (trigger included), without augmentation, in pixel scale."""
    return torch.cat([scale.unnormalise(task.inputs(chunk)) for chunk in task.forget_idx.cpu().split(512)])


def gather_evidence(task: Task, model: nn.Module, hp: dict) -> Evidence:
    scale = PixelScale(task.bank)
    target = attack_target(task.labels[task.forget_idx], task.num_classes)
    source, source_labels, origin = clean_sources(task, target, hp["images"])
    flagged = flagged_pixels(task, scale).float()
    everything, _ = validation_images(task, None, scale)
    reference, source_classes = everything, "every class"
    of_target = validation_images(task, target, scale, keep_target=True)[0] if target is not None else everything
    if len(of_target) == 0:  # no clean image of the target class to compare with: every class stands in
        of_target = everything
    elif target is not None:
        mean = flagged.mean(0)
        if ((of_target.mean(0) - mean) ** 2).mean() < ((everything.mean(0) - mean) ** 2).mean():
            reference, source_classes = of_target, "the target class (clean-label)"
    embed = Embedded(model)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            anchor = torch.cat([embed(scale.normalise(chunk))[1] for chunk in of_target.split(512)]).mean(0)
            flagged_embedding = torch.cat([embed(scale.normalise(chunk))[1] for chunk in flagged.split(512)]).mean(0)
    finally:
        embed.close()
        model.train(was_training)
    return Evidence(target, scale.pixels(source), source_labels, reference, moments(flagged), anchor,
                    flagged_embedding, source_classes, origin)


def reconstruct(task: Task, model: nn.Module, hp: dict) -> tuple[list[Reconstruction], dict]:
    """The reconstruction(s) to unlearn on ``model`` (steps 1-4) and what the notes say about them (the evidence
    they were fitted on under ``evidence``, not for the notes)."""
    scale = PixelScale(task.bank)
    evidence = gather_evidence(task, model, hp)
    val_pixels, val_labels = validation_images(task, evidence.target, scale)
    generator = torch.Generator(device=task.device).manual_seed(task.seed + 29)
    forms = FORMS if hp["form"] in ("auto", "all") else (hp["form"],)
    found, effects = {}, {}
    for form in forms:
        found[form] = synthesise(model, form, evidence, scale, hp, generator)
        effects[form] = reconstruction_effect(model, found[form], val_pixels, val_labels, scale, evidence)
    if hp["form"] == "all":
        chosen = list(FORMS)
    else:
        chosen = [max(forms, key=lambda f: (form_score(effects[f]), -forms.index(f)))]
    notes = {"target": evidence.target if evidence.target is not None else "untargeted",
             "source_classes": evidence.source_classes, "clean_images": len(evidence.clean),
             "clean_source": evidence.clean_origin, "chosen": chosen,
             "chosen_by": "every form" if hp["form"] == "all" else "the form asked for" if len(forms) == 1 else
             "the highest attack success x similarity on clean validation images",
             "forms": {f: {**{k: round(v, 4) for k, v in effects[f].items()},
                           "score": round(form_score(effects[f]), 4), **found[f].size()} for f in forms}}
    return [found[f] for f in chosen], {**notes, "evidence": evidence}


@torch.no_grad()
def trigger_direction(model: nn.Module, reconstructions: list[Reconstruction], evidence: Evidence,
                      scale: PixelScale) -> torch.Tensor:
    """Unit vector of the mean embedding shift the reconstructions cause on the clean images they were fitted on:
    the direction in which a sample carrying the trigger sits."""
    embedded = Embedded(model.eval())
    try:
        def mean_embedding(stamp: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
            return torch.cat([embedded(scale.normalise(stamp(c)))[1] for c in evidence.clean.split(512)]).mean(0)
        clean = mean_embedding(lambda x: x)
        shift = sum(mean_embedding(r.stamp) - clean for r in reconstructions)
    finally:
        embedded.close()
    return F.normalize(shift, dim=0).cpu()


def trigger_suspects(task: Task, model: nn.Module, direction: torch.Tensor, k: int | str
                     ) -> tuple[torch.Tensor, dict]:
    """Retain samples whose embedding (as trained, trigger included) lies furthest along ``direction``: the
    top ``k``, or with ``k="auto"`` as many as :func:`..hidden_count.choose_k` estimates from the flagged samples'
    own projections (which took part in the reconstruction, so they are not left out one by one). Returns the
    suspects (sorted) and the choice."""
    retain = task.retain_idx.cpu()
    scores = (task.embeddings(model, retain) @ direction).numpy()
    if k == "auto":
        choice = choose_k(scores, (task.embeddings(model, task.forget_idx) @ direction).numpy())
        k = choice["k"]
    else:
        choice = {"k": int(k), "reason": "given"}
    top = torch.from_numpy(np.argsort(-scores, kind="stable")[:k].copy())
    return torch.sort(retain[top]).values, {key: v for key, v in choice.items() if key != "threshold"}
