"""Chapter 7 runs: the slices, the segmentors (S pretrained on real images; the judge), the GAN and pix2pix
training steps, synthesis and its scores, one run, and the grid."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from medlab import data as datasets
from medlab import engine, runtime
from medlab.data.constants import MODALITIES
from medlab.engine import RunContext
from medlab.experiment import Job, RunOutput, fingerprint, job, run_dir_for, run_identity, run_once

from .config import ABLATION, METHODS, SLUG, Method, Settings
from .method import (
    TARGETS, Critic, PatchDiscriminator, Segmentor, UNetGenerator, condition, critic_loss, dice_loss, generator_loss,
    pix2pix_d_loss, pix2pix_g_loss, segmentor_loss,
)
from .scores import slice_dice, synthesis_scores, tumour_dice

T2 = MODALITIES.index("t2")
CHANNELS = torch.tensor([MODALITIES.index(t) for t in TARGETS])  # the image channel of each target code
SEGMENTOR_FILE, JUDGE_FILE, GENERATOR_FILE, EXAMPLES_FILE = "segmentor.pt", "judge.pt", "generator.pt", "examples.pt"
CRITIC_OPTIMIZER = "critic_optimizer.pt"
N_EXAMPLES = 6

# ---------------------------------------------------------------------------------------------
# Data


@dataclass
class ChapterData:
    """The slices of each split: images ``(N, 4, S, S)`` in [-1, 1] (:data:`MODALITIES`) and whole-tumour
    masks ``(N, S, S)`` int64; ``train`` trains the GANs and S, ``val`` the judge, ``test`` is scored."""

    train: tuple[torch.Tensor, torch.Tensor]
    val: tuple[torch.Tensor, torch.Tensor]
    test: tuple[torch.Tensor, torch.Tensor]
    info: dict[str, Any]


_DATA: dict[tuple, ChapterData] = {}


def load_data(config: Settings, data_dir: str | Path | None = None) -> ChapterData:
    """The slices of BraTS under ``data_dir`` (the first ``n_<split>`` of each split, all with 0) or of
    the synthetic look-alike; loaded once per process."""
    folder = None if data_dir is None else str(Path(data_dir).expanduser().resolve())
    key = (config.image_size, config.n_train, config.n_val, config.n_test, config.data_seed, config.healthy_fraction, folder)
    if key not in _DATA:
        parts, info = {}, {}
        for split in ("train", "val", "test"):
            n = getattr(config, f"n_{split}")
            options: dict[str, Any] = {"size": config.image_size}
            if data_dir is None:
                options.update(n=n, seed=config.data_seed, healthy_fraction=config.healthy_fraction)
            dataset = datasets.load("brats_slices", split, data_dir=data_dir, **options)
            count = len(dataset) if data_dir is None or n <= 0 else min(n, len(dataset))
            images = torch.from_numpy(np.asarray(dataset.images[:count], dtype=np.float32))
            masks = torch.from_numpy(np.asarray(dataset.masks[:count], dtype=np.int64))
            parts[split] = (images, masks)
            info[split] = {**{k: v for k, v in dataset.info.items() if k != "cases"}, "slices": count,
                           "tumour_slices": int(masks.flatten(1).any(1).sum())}
        info["kind"] = "synthetic" if data_dir is None else "real"
        _DATA[key] = ChapterData(info=info, **parts)
    return _DATA[key]


def check_data(config: Settings, data_dir: str | Path | None = None) -> None:
    """Load the data and check that the settings fit it before any training: every split holds slices of
    ``image_size`` with some tumour, and the training split at least one batch."""
    data = load_data(config, data_dir)
    where = f"the BraTS slices under {data_dir}" if data_dir is not None else "the synthetic slices"
    for split in ("train", "val", "test"):
        images, masks = getattr(data, split)
        if images.shape[-1] != config.image_size:
            raise ValueError(f"{where}: {split} slices are {images.shape[-1]} pixels, not image_size {config.image_size}")
        if not bool(masks.flatten(1).any(1).any()):
            raise ValueError(f"{where}: no {split} slice holds a tumour")
    if len(data.train[0]) < config.batch_size:
        raise ValueError(f"{where}: {len(data.train[0])} training slices are fewer than one batch of {config.batch_size}")


class Slices(Dataset):
    """``(image, mask)`` pairs from two stacked tensors."""

    def __init__(self, images: torch.Tensor, masks: torch.Tensor):
        self.images, self.masks = images, masks

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        return self.images[index], self.masks[index]


def pick(images: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
    """The channel of each sample's target code, ``(B, 1, H, W)``."""
    return images[torch.arange(len(images), device=images.device), CHANNELS.to(images.device)[code]][:, None]


def segmentor_input(image: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
    """A segmentor's input: the image and its one-hot modality code as constant channels."""
    return condition(image, code)


# ---------------------------------------------------------------------------------------------
# The segmentors: S (pretrained on the GAN's cases) and the judge (the val cases)


def make_judge(widths: tuple[int, ...]) -> nn.Module:
    """The judge: a MONAI 2D U-Net on an image and its modality code, one tumour logit per pixel."""
    from monai.networks.nets import UNet

    return UNet(spatial_dims=2, in_channels=1 + len(TARGETS), out_channels=1, channels=tuple(widths),
                strides=(2,) * (len(widths) - 1), num_res_units=1)


def train_segmentor(config: Settings, data: ChapterData, item: Job, run: RunContext) -> RunOutput:
    """Stage ``segmentor``: S on the real FLAIR, T1ce and T1 of the training split (a random one per
    sample and step), Dice loss (the code's pretraining). Stage ``judge``: the judge on the val split's real
    images, Dice + BCE. Both scored on the real test images of each modality."""
    runtime.seed_everything(item.seed)
    is_judge = item.stage == "judge"
    model = make_judge(tuple(config.judge_widths)) if is_judge else Segmentor(widths=tuple(config.seg_widths))
    images, masks = data.val if is_judge else data.train

    def loss_fn(m: nn.Module, batch) -> dict[str, torch.Tensor]:
        x, y = batch
        code = torch.randint(len(TARGETS), (len(x),), device=x.device)
        inputs = segmentor_input(pick(x, code), code)
        if is_judge:
            logits = m(inputs).float()
            loss = dice_loss(torch.sigmoid(logits), y[:, None]) + F.binary_cross_entropy_with_logits(logits, y[:, None].float())
        else:
            loss = dice_loss(m(inputs).float(), y[:, None])
        return {"loss": loss}

    lr, epochs = (config.judge_lr, config.judge_epochs) if is_judge else (config.seg_lr, config.seg_epochs)
    batch = min(config.batch_size, len(images))
    fit = engine.fit(model, Slices(images, masks), run=run, loss_fn=loss_fn, optimizer=torch.optim.Adam(model.parameters(), lr=lr),
                     epochs=epochs, batch_size=batch, amp=False)
    torch.save(model.state_dict(), run.path(JUDGE_FILE if is_judge else SEGMENTOR_FILE))
    test_x, test_y = data.test
    scores = {}
    for k, target in enumerate(TARGETS):
        code = torch.full((len(test_x),), k, dtype=torch.long)
        probs = segment(model, pick(test_x, code), code, run.device, config.eval_batch_size, logits=is_judge)
        scores[f"{target}/dice"] = tumour_dice(probs, test_y)
        scores[f"{target}/dice_slice"] = slice_dice(probs, test_y)
    for name in ("dice", "dice_slice"):
        scores[name] = float(np.mean([scores[f"{t}/{name}"] for t in TARGETS]))
    return RunOutput(metrics=scores, fit=fit)


@torch.no_grad()
def segment(model: nn.Module, images: torch.Tensor, code: torch.Tensor, device: torch.device, batch_size: int,
            logits: bool = True) -> torch.Tensor:
    """Tumour probabilities ``(N, H, W)`` of ``images`` ``(N, 1, H, W)`` under modality ``code``."""
    was = model.training
    model.eval().to(device)
    out = []
    for s in range(0, len(images), batch_size):
        y = model(segmentor_input(images[s : s + batch_size].to(device), code[s : s + batch_size].to(device))).float()
        out.append((torch.sigmoid(y) if logits else y)[:, 0].cpu())
    model.train(was)
    return torch.cat(out)


# ---------------------------------------------------------------------------------------------
# The GANs


class Synthesis(nn.Module):
    """What a synthesis run trains: the generator(s), the critic(s) and, for TC-MGAN, the segmentor S.
    A GAN has one generator ``G(T2, c)``; pix2pix one generator per target (``generators[k]``)."""

    def __init__(self, method: Method, config: Settings):
        super().__init__()
        downs = int(np.log2(config.image_size))
        self.kind = method.kind
        if method.kind == "pix2pix":
            self.generators = nn.ModuleList([UNetGenerator(1, 1, downs, config.width) for _ in TARGETS])
            layers = 3 if config.image_size >= 32 else 2  # the 70 x 70 PatchGAN; two layers on 16-pixel smoke slices
            self.critics = nn.ModuleList([PatchDiscriminator(2, config.critic_width, layers) for _ in TARGETS])
        else:
            self.generators = nn.ModuleList([UNetGenerator(1 + len(TARGETS), 1, downs, config.width)])
            self.critics = nn.ModuleList([Critic(config.image_size, config.critic_width)])
        self.segmentor = Segmentor(widths=tuple(config.seg_widths)) if method.consistency else None

    @torch.no_grad()
    def synthesise(self, t2: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        """The synthetic target ``(B, 1, H, W)`` of each T2 slice under ``code``."""
        if self.kind == "pix2pix":
            out = torch.empty_like(t2)
            for k, g in enumerate(self.generators):
                chosen = code == k
                if bool(chosen.any()):
                    out[chosen] = g(t2[chosen])
            return out
        return self.generators[0](condition(t2, code))


def lr_factor(epoch: int, epochs: int) -> float:
    """The code's steps (1e-4, 5e-5, 1e-5 after epochs 30, 60, 90 of 100 at 2e-4), as shares of the run."""
    share = epoch / epochs
    return 1.0 if share < 0.3 else 0.5 if share < 0.6 else 0.25 if share < 0.9 else 0.05


def gan_step(model: Synthesis, batch, method: Method, config: Settings, critic_opt: torch.optim.Optimizer,
             lr: float) -> dict[str, torch.Tensor]:
    """One iteration of the code's order: the critic once, then G, then S (G's and S's losses are returned
    together: S's is on the detached synthetic image, G's sees S and D frozen, so one step does both)."""
    images, masks = batch
    code = torch.randint(len(TARGETS), (len(images),), device=images.device)
    t2, real = images[:, T2 : T2 + 1], pick(images, code)
    for group in critic_opt.param_groups:
        group["lr"] = lr
    if model.kind == "pix2pix":
        return pix2pix_step(model, images, critic_opt, config)
    generator, critic = model.generators[0], model.critics[0]
    fake = generator(condition(t2, code))
    cls_weight = config.cls_weight if method.classifier else 0.0
    d = critic_loss(critic, real, fake, t2, code, cls_weight=cls_weight, gp_weight=config.gp_weight if method.penalty else 0.0)
    critic_opt.zero_grad(set_to_none=True)
    d["loss"].backward()
    critic_opt.step()
    if not method.penalty:  # the original WGAN's weight clipping
        with torch.no_grad():
            for p in critic.parameters():
                p.clamp_(-config.clip, config.clip)
    frozen = [critic] + ([model.segmentor] if model.segmentor is not None else [])
    for m in frozen:
        m.requires_grad_(False)
    src, cls = critic(fake, t2)
    tumour = masks[:, None]
    seg_probs = model.segmentor(segmentor_input(fake, code)) if model.segmentor is not None else None
    for m in frozen:
        m.requires_grad_(True)
    g = generator_loss(src, cls, real, fake, code, seg_probs, tumour, cls_weight=cls_weight, rec_weight=config.rec_weight,
                       seg_weight=config.seg_weight if method.consistency else 0.0)
    out = {**g, "g_loss": g["loss"].detach(), **{k: v.detach() for k, v in d.items() if k != "loss"}, "d_loss": d["loss"].detach()}
    if model.segmentor is not None:
        s = segmentor_loss(model.segmentor(segmentor_input(fake.detach(), code)), model.segmentor(segmentor_input(real, code)), tumour)
        out["loss"] = g["loss"] + s
        out["s_loss"] = s.detach()
    return out


def pix2pix_step(model: Synthesis, images: torch.Tensor, critic_opt: torch.optim.Optimizer, config: Settings) -> dict[str, torch.Tensor]:
    """pix2pix: one target drawn per batch, its discriminator's step, then its generator's loss (the
    other two models rest), so each target model gets a third of the steps: as many samples of its target
    as the one-generator methods see, at the same cost per step."""
    t2 = images[:, T2 : T2 + 1]
    k = int(torch.randint(len(TARGETS), ()))
    generator, disc = model.generators[k], model.critics[k]
    real = pick(images, torch.full((len(t2),), k, device=t2.device))
    fake = generator(t2)
    d_loss = pix2pix_d_loss(disc, real, fake, t2)
    critic_opt.zero_grad(set_to_none=True)
    d_loss.backward()
    critic_opt.step()
    disc.requires_grad_(False)
    g = pix2pix_g_loss(disc, real, fake, t2, l1_weight=config.pix2pix_l1)
    disc.requires_grad_(True)
    return {**g, "d_loss": d_loss.detach(), "g_loss": g["loss"].detach()}


def train_synthesis(config: Settings, data: ChapterData, item: Job, run: RunContext, segmentor: Path | None,
                    judge: Path) -> RunOutput:
    """Train ``item.method`` on the training slices (TC-MGAN's S starts from the pretrained ``segmentor``),
    synthesise every target of every test slice and score it, with the ``judge``'s tumour Dice."""
    method = METHODS[item.method]
    runtime.seed_everything(item.seed)
    model = Synthesis(method, config)
    if model.segmentor is not None:
        model.segmentor.load_state_dict(torch.load(segmentor, map_location="cpu"))
    pix = method.kind == "pix2pix"
    betas = (0.5, 0.999) if pix else (0.9, 0.999)
    trained = [p for m in (model.generators, model.segmentor) if m is not None for p in m.parameters()]
    optimizer = torch.optim.Adam(trained, lr=config.lr, betas=betas)
    critic_opt = torch.optim.Adam(model.critics.parameters(), lr=config.lr, betas=betas)
    saved = run.run_dir / CRITIC_OPTIMIZER
    if saved.exists() and (run.run_dir / engine.CHECKPOINT).exists():
        state = torch.load(saved, map_location="cpu")
        if state.get("fingerprint") == run.fingerprint:
            critic_opt.load_state_dict(state["optimizer"])
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: lr_factor(e, config.epochs))

    def keep_critic_optimizer(epoch: int, record: dict) -> None:
        torch.save({"optimizer": critic_opt.state_dict(), "fingerprint": run.fingerprint}, run.path(CRITIC_OPTIMIZER))

    fit = engine.fit(
        model, Slices(*data.train), run=run, optimizer=optimizer, epochs=config.epochs, batch_size=config.batch_size,
        loss_fn=lambda m, b: gan_step(m, b, method, config, critic_opt, optimizer.param_groups[0]["lr"]),
        scheduler=scheduler, amp=False, on_epoch_end=[keep_critic_optimizer],
    )
    torch.save(model.generators.state_dict(), run.path(GENERATOR_FILE))
    scores, examples = evaluate(model, data, config, run.device, load_judge(judge, config))
    torch.save(examples, run.path(EXAMPLES_FILE))
    return RunOutput(metrics=scores, fit=fit, artifacts={"generator": GENERATOR_FILE, "examples": EXAMPLES_FILE})


def load_judge(path: Path, config: Settings) -> nn.Module:
    if not Path(path).exists():
        raise FileNotFoundError(f"no judge {path}: run the judge's job (phase 0) first")
    judge = make_judge(tuple(config.judge_widths))
    judge.load_state_dict(torch.load(path, map_location="cpu"))
    return judge.eval()


@torch.no_grad()
def evaluate(model: Synthesis, data: ChapterData, config: Settings, device: torch.device, judge: nn.Module) -> tuple[dict[str, float], dict]:
    """Synthesis scores per target and their means over targets, the judge's tumour Dice on the synthetic
    images, and the references: the judge on the real images and on a blank image, and the T2 input
    taken as the target. Also the first test slices with a tumour (T2, real, synthetic), for figures."""
    model.eval().to(device)
    images, masks = data.test
    brain = images[:, T2] > -1
    tumour = masks.bool()
    scores: dict[str, float] = {}
    show = torch.nonzero(tumour.flatten(1).any(1)).flatten()[:N_EXAMPLES]
    examples = {"t2": images[show, T2].clone(), "mask": masks[show].clone(), "real": {}, "fake": {}}
    for k, target in enumerate(TARGETS):
        code = torch.full((len(images),), k, dtype=torch.long)
        fake = torch.cat([model.synthesise(images[s : s + config.eval_batch_size, T2 : T2 + 1].to(device), code[s : s + config.eval_batch_size].to(device)).cpu()
                          for s in range(0, len(images), config.eval_batch_size)])
        real = pick(images, code)
        fake = torch.where(brain[:, None], fake, torch.full_like(fake, -1.0))  # the background is known: -1
        scores.update({f"{target}/{n}": v for n, v in synthesis_scores(fake, real, brain, tumour).items()})
        probs = segment(judge, fake, code, device, config.eval_batch_size)
        scores[f"{target}/dice"], scores[f"{target}/dice_slice"] = tumour_dice(probs, masks), slice_dice(probs, masks)
        scores[f"{target}/real_dice"] = tumour_dice(segment(judge, real, code, device, config.eval_batch_size), masks)
        scores[f"{target}/blank_dice"] = tumour_dice(segment(judge, torch.full_like(real, -1.0), code, device, config.eval_batch_size), masks)
        t2_as = synthesis_scores(images[:, T2 : T2 + 1], real, brain, tumour)
        scores[f"{target}/t2_psnr_tumour"], scores[f"{target}/t2_psnr_brain"] = t2_as["psnr_tumour"], t2_as["psnr_brain"]
        # relative to the references: the share of the judge's real-image Dice, and dB above T2 taken as the target
        real_dice = scores[f"{target}/real_dice"]
        scores[f"{target}/dice_share"] = scores[f"{target}/dice"] / real_dice if real_dice > 0 else float("nan")
        scores[f"{target}/psnr_tumour_gain"] = scores[f"{target}/psnr_tumour"] - t2_as["psnr_tumour"]
        scores[f"{target}/psnr_brain_gain"] = scores[f"{target}/psnr_brain"] - t2_as["psnr_brain"]
        examples["real"][target], examples["fake"][target] = real[show, 0].clone(), fake[show, 0].clone()
    names = ("psnr_brain", "ssim_brain", "mae_brain", "psnr_tumour", "ssim_tumour", "mae_tumour", "dice", "dice_slice", "real_dice",
             "blank_dice", "t2_psnr_tumour", "t2_psnr_brain", "dice_share", "psnr_tumour_gain", "psnr_brain_gain")
    for name in names:
        scores[name] = float(np.nanmean([scores[f"{t}/{name}"] for t in TARGETS]))
    scores["n_eval"] = float(len(images))
    scores["n_tumour"] = float(tumour.flatten(1).any(1).sum())
    return scores, examples


# ---------------------------------------------------------------------------------------------
# The grid and one run


def grid(config: Settings) -> list[Job]:
    """Phase 0: S pretrained and the judge, once (``segmentor_seed``); phase 1: the main methods at every seed, the
    ablation at the side seeds that are among the seeds."""
    jobs = [upstream_job(config, stage) for stage in ("segmentor", "judge")]
    jobs += [job("comparison", s, phase=1, stage="gan", method=m) for m in config.methods for s in config.seeds]
    side = [s for s in config.side_seeds if s in config.seeds]
    jobs += [job("ablation", s, phase=1, stage="gan", method=m) for m in config.side_methods if m not in config.methods for s in side]
    for kind in config.downstream_inputs:  # phase 2, at the seeds where the generator exists
        seeds = config.seeds if kind in ("t2", "real") or kind in config.methods else side
        jobs += [job("downstream", s, phase=2, stage="downstream", inputs=kind) for s in seeds]
    return jobs


def identity(config: Settings, item: Job, data_dir: str | Path | None = None) -> dict[str, Any]:
    """The parameters that identify ``item``; a synthesis run also holds the fingerprints of the
    segmentor and judge runs it loads."""
    source = None if data_dir is None else str(data_dir)
    from medlab import dependencies

    if item.stage in ("segmentor", "judge"):
        return run_identity(config, stage=item.stage, network=item.network, data_dir=source)
    if item.stage == "downstream":
        from .downstream import synthesis_job

        params = run_identity(config, stage="downstream", inputs=item.inputs, data_dir=source)
        if item.inputs not in ("t2", "real"):
            params["generator"] = fingerprint(identity(config, synthesis_job(item, config), data_dir), dependencies.code_fingerprint(SLUG))
        return params
    params = run_identity(config, stage="gan", method=item.method, data_dir=source)
    for stage in ("segmentor", "judge") if METHODS[item.method].consistency else ("judge",):
        upstream = identity(config, upstream_job(config, stage), data_dir)
        params[stage] = fingerprint(upstream, dependencies.code_fingerprint(SLUG))
    return params


def upstream_job(config: Settings, stage: str) -> Job:
    """The run that trains S (``stage="segmentor"``) or the judge, shared by every synthesis run."""
    return job("segmentors", config.segmentor_seed, stage=stage, network=stage)


def upstream_file(config: Settings, item: Job, stage: str, profile: str, data_dir: str | Path | None) -> Path:
    """The segmentor (``stage="segmentor"``) or the judge a synthesis run ``item`` loads."""
    source = upstream_job(config, stage)
    return run_dir_for(profile, SLUG, source, identity(config, source, data_dir)) / (SEGMENTOR_FILE if stage == "segmentor" else JUDGE_FILE)


def run_job(item: Job, *, config: Settings, profile: str, device: str, data_dir: str | None = None, progress: bool | None = None) -> dict[str, Any]:
    """One grid cell: train, evaluate, write the results record and return it (resumes when called again)."""
    data = load_data(config, data_dir)
    if item.stage in ("segmentor", "judge"):
        train = lambda run: train_segmentor(config, data, item, run)  # noqa: E731
    elif item.stage == "downstream":
        from .downstream import synthesis_job, train_downstream

        source = synthesis_job(item, config)
        generator = None if item.inputs in ("t2", "real") else (
            run_dir_for(profile, SLUG, source, identity(config, source, data_dir)) / GENERATOR_FILE)
        train = lambda run: train_downstream(config, data, item, run, generator)  # noqa: E731
    else:
        segmentor = upstream_file(config, item, "segmentor", profile, data_dir) if METHODS[item.method].consistency else None
        judge = upstream_file(config, item, "judge", profile, data_dir)
        train = lambda run: train_synthesis(config, data, item, run, segmentor, judge)  # noqa: E731
    return run_once(chapter=SLUG, profile=profile, job=item, params=identity(config, item, data_dir), dataset=data.info,
                    device=torch.device(device), train=train, progress=progress, num_workers=config.num_workers)


def describe(item: Job, record: Mapping[str, Any]) -> str:
    m = record["metrics"]
    if item.experiment == "segmentors":
        return f"{item.network} seed {item.seed}: Dice on real test images {m['dice']:.3f}"
    if item.experiment == "downstream":
        return f"downstream: segmentor on {item.inputs}, seed {item.seed}: test Dice {m['dice']:.3f}"
    return (f"{item.experiment}: {item.method}, seed {item.seed}: judge's Dice {m['dice']:.3f} (real {m['real_dice']:.3f}), "
            f"PSNR brain {m['psnr_brain']:.2f} / tumour {m['psnr_tumour']:.2f} dB, SSIM {m['ssim_brain']:.3f}")
