"""Chapter 7's downstream claim: a tumour segmentor trained on T2 plus the modalities a trained generator
synthesises from it, against one trained on T2 alone (and, as a reference, on the four real modalities),
trained on the ``val`` slices and tested on the ``test`` slices, as the code's ``train_unet_4.py`` /
``test_unet_4.py`` do (with the synthetic modalities generated for the training cases too, which the
code's hard-coded paths do not do)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from medlab import engine, runtime
from medlab.engine import RunContext
from medlab.experiment import Job, RunOutput, job

from .config import METHODS, Settings
from .method import TARGETS, Segmentor, dice_loss
from .runs import CHANNELS, GENERATOR_FILE, T2, ChapterData, Slices, Synthesis
from .scores import slice_dice, tumour_dice

INPUTS = {"t2": "T2 alone", "real": "the four real modalities"} | {m: f"T2 + {m}'s synthetic FLAIR, T1ce, T1" for m in METHODS}


def synthesis_job(item: Job, config: Settings) -> Job:
    """The synthesis run whose generator makes ``item``'s inputs (same seed, as :func:`~.runs.grid` names it)."""
    experiment = "comparison" if item.inputs in config.methods else "ablation"
    return job(experiment, item.seed, phase=1, stage="gan", method=item.inputs)


def load_generator(path: Path, method: str, config: Settings) -> Synthesis:
    if not Path(path).exists():
        raise FileNotFoundError(f"no generator {path}: run the synthesis job (phase 1) first")
    model = Synthesis(METHODS[method], config)
    model.generators.load_state_dict(torch.load(path, map_location="cpu"))
    return model.eval()


@torch.no_grad()
def inputs_of(images: torch.Tensor, kind: str, generator: Synthesis | None, batch_size: int) -> torch.Tensor:
    """The segmentor's input channels: T2, T2 + the synthetic FLAIR/T1ce/T1, or the four real ones."""
    t2 = images[:, T2 : T2 + 1]
    if kind == "t2":
        return t2.clone()
    if kind == "real":
        return torch.cat([t2, images[:, CHANNELS]], 1)
    brain = t2 > -1
    out = [t2]
    for k in range(len(TARGETS)):
        code = torch.full((len(t2),), k, dtype=torch.long)
        fake = torch.cat([generator.synthesise(t2[s : s + batch_size], code[s : s + batch_size]) for s in range(0, len(t2), batch_size)])
        out.append(torch.where(brain, fake, torch.full_like(fake, -1.0)))
    return torch.cat(out, 1)


def train_downstream(config: Settings, data: ChapterData, item: Job, run: RunContext, generator: Path | None) -> RunOutput:
    """Train the 4-channel (or 1-channel) U-Net on the ``val`` slices' inputs with the Dice loss (the
    code's: Adam 1e-3) and score it on the test slices' inputs of the same kind."""
    runtime.seed_everything(item.seed)
    model_g = load_generator(generator, item.inputs, config) if generator is not None else None
    train_x = inputs_of(data.val[0], item.inputs, model_g, config.eval_batch_size)
    test_x = inputs_of(data.test[0], item.inputs, model_g, config.eval_batch_size)
    model: nn.Module = Segmentor(in_channels=train_x.shape[1], widths=tuple(config.seg_widths))

    def loss_fn(m: nn.Module, batch) -> dict[str, torch.Tensor]:
        x, y = batch
        return {"loss": dice_loss(m(x).float(), y[:, None])}

    fit = engine.fit(model, Slices(train_x, data.val[1]), run=run, loss_fn=loss_fn,
                     optimizer=torch.optim.Adam(model.parameters(), lr=config.downstream_lr), epochs=config.downstream_epochs,
                     batch_size=min(config.batch_size, len(train_x)), amp=False)
    model.eval().to(run.device)
    with torch.no_grad():
        probs = torch.cat([model(test_x[s : s + config.eval_batch_size].to(run.device)).float()[:, 0].cpu()
                           for s in range(0, len(test_x), config.eval_batch_size)])
    masks = data.test[1]
    scores = {"dice": tumour_dice(probs, masks), "dice_slice": slice_dice(probs, masks), "n_eval": float(len(masks)),
              "channels": float(train_x.shape[1])}
    return RunOutput(metrics={k: float(np.float64(v)) for k, v in scores.items()}, fit=fit)
