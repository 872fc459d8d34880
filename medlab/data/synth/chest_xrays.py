"""Synthetic frontal chest radiographs with ChestX-ray14's 14 findings as multi-label targets.

Nothing here comes from a real patient: each image is drawn procedurally, in the radiograph
convention (bone and fluid bright, air dark), from a random synthetic patient -- body habitus,
position and slight rotation, lungs, mediastinum and spine, heart, hemidiaphragms, ribs, clavicles,
shoulders, hila and lung markings, breast shadows, a gastric bubble, an optional side marker -- and a
random acquisition (exposure, contrast, gamma, heel-effect gradient, quantum noise). On top of it the
image's findings are drawn where a radiologist would look for them, each with its own size and
severity (some cases are subtle):

========================  ====================================================================
Atelectasis               band-like or wedge opacity at one base, hemidiaphragm raised (volume loss)
Cardiomegaly              heart wider, cardiothoracic ratio 0.52 to 0.66
Effusion                  fluid blunting one or both costophrenic angles, rising laterally (meniscus)
Infiltration              patchy ill-defined opacity
Mass                      round, slightly lobulated opacity, 3.5 to 7 cm across
Nodule                    one to three small round opacities
Pneumonia                 airspace opacity filling (part of) a lobe, sharp at the fissure
Pneumothorax              lung edge pulled away: dark rim without markings, thin pleural line
Consolidation             dense homogeneous region
Edema                     bilateral perihilar haze
Emphysema                 hyperlucent, taller lungs, flat low diaphragm, narrow heart, bullae
Fibrosis                  reticular lines in the lower and peripheral zones, slight volume loss
Pleural_Thickening        bright band along the lateral pleura or an apical cap
Hernia                    rounded retrocardiac opacity above the diaphragm, often an air-fluid level
========================  ====================================================================

Labels follow ChestX-ray14's prevalences (raised to ``prevalence_floor`` for the rarest, so small test
sets keep positives) with 53.8% of the images free of findings, and three documented co-occurrences
(:data:`CO_OCCURRENCE`). :func:`render` draws the patient first and the findings from their own
random streams, so :func:`finding_gallery` can show one patient with each finding in turn.
:func:`chestxray14_lookalike` draws the split the registry's ``load("chestxray14", split, n=...)`` returns.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from torch.utils.data import Dataset

from medlab.data.constants import FINDINGS, NO_FINDING_FRACTION, PREVALENCE
from medlab.data.splits import require_n, split_seed

try:  # the ufunc behind np.clip, without its Python overhead (a third of the time on small images)
    from numpy._core.umath import clip as _clip
except ImportError:  # numpy < 2
    _clip = np.clip

# (finding, finding it brings along, probability): pleural fluid compresses the lung next to it;
# oedema comes with an enlarged heart (cardiac failure); NIH labels often pair pneumonia with infiltration.
CO_OCCURRENCE = (("Effusion", "Atelectasis", 0.25), ("Edema", "Cardiomegaly", 0.3), ("Pneumonia", "Infiltration", 0.3))
_K = {name: k for k, name in enumerate(FINDINGS)}


# --- labels -----------------------------------------------------------------------------------------


def finding_prevalence(prevalence_floor: float = 0.02) -> np.ndarray:
    """Each finding's target prevalence: ChestX-ray14's, raised to ``prevalence_floor``."""
    return np.maximum(PREVALENCE, prevalence_floor)


@lru_cache(maxsize=16)
def _base_rates(prevalence_floor: float) -> tuple[float, ...]:
    """Per-finding probabilities ``q`` for an abnormal image, before co-occurrences and the "at least one".

    An abnormal image draws each finding with probability ``q_k`` independently, redrawn until it has
    one, then adds co-occurring findings; ``q`` is solved so the overall prevalences hit their targets.
    """
    abnormal = 1 - NO_FINDING_FRACTION
    target = finding_prevalence(prevalence_floor) / abnormal
    if target.max() >= 1:
        raise ValueError(f"prevalence_floor {prevalence_floor} is too high for {abnormal:.1%} abnormal images")
    q = target * 0.8
    for _ in range(200):
        p_any = 1 - np.prod(1 - q)
        r = target * p_any  # P(finding k among the base draws or brought along)
        kept = np.ones(len(FINDINGS))
        for trigger, added, prob in CO_OCCURRENCE:
            kept[_K[added]] *= 1 - q[_K[trigger]] * prob
        q = _clip(1 - (1 - r) / kept, 1e-6, 1 - 1e-6)
    return tuple(q.tolist())


def sample_findings(n: int, rng: np.random.Generator, prevalence_floor: float = 0.02) -> np.ndarray:
    """Multi-hot labels ``(n, 14)`` (float32, FINDINGS order) with the spec's prevalences."""
    q = np.array(_base_rates(float(prevalence_floor)))
    abnormal = rng.uniform(size=n) < 1 - NO_FINDING_FRACTION
    labels = np.zeros((n, len(FINDINGS)), dtype=bool)
    todo = np.flatnonzero(abnormal)
    while todo.size:
        draw = rng.uniform(size=(todo.size, len(FINDINGS))) < q
        labels[todo] = draw
        todo = todo[~draw.any(1)]
    base = labels.copy()
    for trigger, added, prob in CO_OCCURRENCE:
        labels[:, _K[added]] |= base[:, _K[trigger]] & (rng.uniform(size=n) < prob)
    return labels.astype(np.float32)


# --- rendering helpers ------------------------------------------------------------------------------


@lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    lin = np.linspace(-1, 1, size, dtype=np.float32)
    yy, xx = np.meshgrid(lin, lin, indexing="ij")
    return yy, xx


@lru_cache(maxsize=8)
def _textures(size: int, count: int = 12) -> dict[str, np.ndarray]:
    """Banks of ``(count, 2*size, 2*size)`` random textures; an image crops one at a random offset.

    ``vessel``: ridges of band-pass noise (branching vessel-like lines); ``fine``: finer ridges
    (reticulation); ``patch``: smooth blotches in [0, 1]. Frequencies are per image width, so a
    texture looks alike at every size (up to the pixel grid).
    """
    rng = np.random.default_rng(20170001)
    big = 2 * size
    f = np.fft.fftfreq(big) * size / 2  # cycles per unit of the [-1, 1] frame
    k = np.sqrt(f[:, None] ** 2 + f[None, :] ** 2) + 1e-6
    white = np.fft.fft2(rng.standard_normal((3, count, big, big)))

    def band(spectrum, centre, width):
        field = np.fft.ifft2(spectrum * np.exp(-np.log(k / centre) ** 2 / (2 * width**2))).real
        return field / field.std(axis=(-2, -1), keepdims=True)

    vessel = _clip(1 - np.abs(band(white[0], 2.5, 0.45)) / 0.45, 0, 1) ** 2
    fine = _clip(1 - np.abs(band(white[1], 6.0, 0.35)) / 0.5, 0, 1) ** 1.5
    patch = 1 / (1 + np.exp(-1.5 * band(white[2], 1.2, 0.5)))
    return {name: a.astype(np.float32) for name, a in (("vessel", vessel), ("fine", fine), ("patch", patch))}


def _crop(bank: np.ndarray, pick: tuple[int, int, int]) -> np.ndarray:
    i, oy, ox = pick
    size = bank.shape[-1] // 2
    return bank[i, oy : oy + size, ox : ox + size]


def _ramp(x, width):
    """Soft step: 0 where ``x < -width/2``, 1 where ``x > width/2``."""
    return _clip(x * (1.0 / width) + 0.5, 0.0, 1.0)


def _ellipse(u, v, cu, cv, ru, rv, edge, angle=0.0):
    """Soft mask of an ellipse (radii ``ru, rv``, rotated by ``angle``) with an edge ``edge`` wide."""
    du, dv = u - cu, v - cv
    if angle:
        c, s = float(np.cos(angle)), float(np.sin(angle))
        du, dv = c * du + s * dv, -s * du + c * dv
    r = np.sqrt((du / ru) ** 2 + (dv / rv) ** 2)
    return _ramp((1 - r) * min(ru, rv), edge)


def _teeth(phase, duty=0.4):
    """Periodic bands of period 1 (ribs, vertebrae): 1 on a ``duty`` fraction, soft edges, 0 between."""
    t = np.abs(phase - np.rint(phase))
    return _ramp(0.5 * duty - t, 0.2)


def _gauss(u, v, cu, cv, su, sv):
    return np.exp(-(((u - cu) / su) ** 2 + ((v - cv) / sv) ** 2) / 2)


def _segment_distance(u, v, p0, p1):
    du, dv = p1[0] - p0[0], p1[1] - p0[1]
    t = _clip(((u - p0[0]) * du + (v - p0[1]) * dv) / (du * du + dv * dv), 0, 1)
    return np.sqrt((u - p0[0] - t * du) ** 2 + (v - p0[1] - t * dv) ** 2)


# The patient's parameters, each uniform in its range (units: the image spans [-1, 1]).
_PATIENT = {
    "cx": (-0.07, 0.07),  # position
    "cy": (-0.07, 0.07),
    "scale": (0.85, 1.08),  # habitus and distance
    "angle": (-0.07, 0.07),  # rotation, radians
    "body_w": (0.88, 1.1),
    "tissue": (0.4, 0.52),  # soft-tissue density
    "lc": (0.28, 0.32),  # centre of the ellipse bounding a lung laterally
    "la": (0.36, 0.4),  # its half-width (the mediastinum cuts it medially)
    "lb": (0.66, 0.76),  # its half-height
    "vc": (0.0, 0.08),
    "dome": (0.5, 0.6),  # level of the costophrenic angles
    "dome_h": (0.13, 0.2),  # height of the domes above them
    "right_up": (0.0, 0.07),  # the right hemidiaphragm sits higher
    "ctr": (0.36, 0.5),  # cardiothoracic ratio
    "heart_h": (0.27, 0.33),
    "heart_shift": (-0.035, 0.035),
    "air": (0.28, 0.4),  # darkness of the lungs
    "markings": (0.05, 0.12),
    "rib_amp": (0.025, 0.075),
    "rib_sp": (0.105, 0.135),
    "rib_phase": (0.0, 1.0),
    "rib_phase2": (0.0, 1.0),
    "rib_curv": (0.3, 0.6),
    "clav_v": (-0.62, -0.5),
    "clav_drop": (0.06, 0.14),
    "clav_w": (0.02, 0.032),
    "breast": (0.04, 0.13),
    "has_breast": (0.0, 1.0),
    "breast_v": (0.2, 0.35),
    "bubble": (0.6, 1.3),
    "has_bubble": (0.0, 1.0),
    "bubble_u": (0.22, 0.38),
    "marker": (0.0, 3.0),  # none, top left, top right
    "haze": (0.0, 0.08),  # uneven lung density (overlapping soft tissue), mimics faint opacities
    "scapula": (0.0, 0.06),  # scapulae over the lateral upper zones
    "nipples": (0.04, 0.12),  # nipple shadows, nodule mimics
    "has_nipples": (0.0, 1.0),
    "nipple_du": (-0.1, 0.1),
    "nipple_dv": (0.0, 0.15),
    "fold": (0.03, 0.07),  # a skin fold, pneumothorax mimic
    "has_fold": (0.0, 1.0),
    "fold_u": (0.45, 0.65),
    "fold_side": (-1.0, 1.0),
    "gain": (0.85, 1.2),  # exposure and contrast
    "offset": (-0.06, 0.05),
    "gamma": (0.6, 1.6),  # x / (x + gamma (1 - x)): darker above 1, brighter below
    "heel": (-0.1, 0.1),
    "noise_sd": (0.006, 0.035),
}
_LO, _HI = (np.array(r) for r in zip(*_PATIENT.values()))


def _sample_patient(rng: np.random.Generator, size: int) -> dict:
    """Anatomy, position, acquisition and noise of one synthetic patient (never depends on findings)."""
    values = _LO + (_HI - _LO) * rng.uniform(size=len(_LO))
    p = dict(zip(_PATIENT, values.tolist()))
    p["breast"] *= p.pop("has_breast") < 0.45
    p["bubble"] *= p.pop("has_bubble") < 0.7
    p["nipples"] *= p.pop("has_nipples") < 0.3
    p["fold"] *= p.pop("has_fold") < 0.12
    p["marker"] = int(p["marker"])
    count = _textures(size)["vessel"].shape[0]
    picks = rng.integers(0, [count, size, size] * 4).tolist()
    p["vessel"], p["fine"], p["patch"], p["haze_tex"] = picks[:3], picks[3:6], picks[6:9], picks[9:]
    p["seeds"] = rng.integers(0, 2**63, size=len(FINDINGS))  # one random stream per finding
    p["noise"] = rng.random((size, size), dtype=np.float32) - 0.5  # uniform: 4x faster than normal
    return p


def _lung_point(frng, p, side, f_range, t_range):
    """A point inside lung ``side`` (-1 image left = patient's right, +1 image right).

    ``f`` runs from the apex (0) to the dome (1), ``t`` from the medial (0) to the lateral (1) edge.
    """
    f = frng.uniform(*f_range)
    apex = p["vc"] - p["lb"]
    base = p["dome"] - p["dome_h"] + (-p["right_up"] if side < 0 else 0)
    v = apex + 0.12 + f * (base - apex - 0.12)
    half = p["la"] * max(1 - ((v - p["vc"]) / p["lb"]) ** 2, 0.05) ** 0.5
    inner, outer = max(p["lc"] - half, 0.11), p["lc"] + half
    lo, hi = t_range
    if side > 0 and f > 0.55:  # the heart hides the medial left base
        lo = max(lo, 0.5)
    t = frng.uniform(lo, max(hi, lo + 0.05))
    return float(side * (inner + t * (outer - inner))), float(v)


# --- one image ---------------------------------------------------------------------------------------


def render(findings: np.ndarray, size: int, rng: np.random.Generator, *, severity: float | None = None) -> np.ndarray:
    """One radiograph, float32 ``(size, size)`` in [0, 1], with the findings flagged in ``findings`` (14,).

    The patient is drawn from ``rng`` first, the same way whatever the findings; each finding then
    draws its place, size and severity from its own stream seeded by the patient, so the same
    ``rng`` state gives the same patient and the same finding with or without the others.
    ``severity`` (0..1) overrides the random severities (for figures).
    """
    present = np.asarray(findings).reshape(-1) > 0.5
    if present.size != len(FINDINGS):
        raise ValueError(f"findings must have {len(FINDINGS)} entries, got {present.size}")
    p = _sample_patient(rng, size)
    frng = {name: np.random.default_rng(p["seeds"][k]) for k, name in enumerate(FINDINGS) if present[k]}

    def sev(name):
        drawn = frng[name].uniform(0.1, 1.0)
        return drawn if severity is None else float(severity)

    s = {name: sev(name) for name in frng}
    side_of = {name: (-1 if frng[name].uniform() < 0.55 else 1) for name in frng}

    # findings that change the anatomy itself
    dome = [p["dome"] - p["right_up"], p["dome"]]  # image left (patient's right), image right
    dome_h = [p["dome_h"], p["dome_h"]]
    lb, air, ctr, heart_h = p["lb"], p["air"], p["ctr"], p["heart_h"]
    if "Emphysema" in s:
        e = s["Emphysema"]
        dome = [d + 0.03 + 0.07 * e for d in dome]
        dome_h = [h * (1 - 0.6 * e) for h in dome_h]
        lb += 0.03 * e
        air *= 1.05 + 0.25 * e
        ctr *= 1 - 0.1 * e
    if "Cardiomegaly" in s:
        ctr = 0.51 + 0.14 * s["Cardiomegaly"]
        heart_h *= 1 + 0.1 * s["Cardiomegaly"]
    if "Fibrosis" in s:
        dome = [d - 0.03 * s["Fibrosis"] for d in dome]
    if "Atelectasis" in s:
        dome[(side_of["Atelectasis"] + 1) // 2] -= 0.01 + 0.06 * s["Atelectasis"]

    # patient coordinates
    yy, xx = _grid(size)
    ca, sa = float(np.cos(p["angle"])), float(np.sin(p["angle"]))
    dx, dy = (xx - p["cx"]) / p["scale"], (yy - p["cy"]) / p["scale"]
    u, v = ca * dx + sa * dy, -sa * dx + ca * dy
    au = np.abs(u)
    right = u > 0
    edge = 3.0 / (size * p["scale"])  # 1.5 pixels
    tex = _textures(size)
    vessel, fine, patch = _crop(tex["vessel"], p["vessel"]), _crop(tex["fine"], p["fine"]), _crop(tex["patch"], p["patch"])

    # body and soft tissue, thicker in the middle
    bw = p["body_w"] * (1.04 - 0.1 * v)
    body = _ramp(bw - au, 4 * edge)
    depth = np.sqrt(_clip(1 - (u / bw) ** 2, 0, 1))
    density = p["tissue"] * (0.55 + 0.45 * depth) * body

    # lungs: ellipses cut by the hemidiaphragm domes
    lc, la, vc = p["lc"], p["la"], p["vc"]
    lung_r = np.sqrt(((au - lc) / la) ** 2 + ((v - vc) / lb) ** 2)
    side_dome = np.where(right, np.float32(dome[1]), np.float32(dome[0]))
    side_h = np.where(right, np.float32(dome_h[1]), np.float32(dome_h[0]))
    dome_v = side_dome - side_h * _clip(1 - ((au - lc + 0.06) / (la + 0.06)) ** 2, 0, 1)
    above = _ramp(dome_v - v, edge)
    lung = _ramp((1 - lung_r) * la - edge, 2 * edge) * above * _ramp(au - 0.1, edge)

    # heart: a tilted ellipse reaching further to the image's right (the patient's left)
    width = ctr * 2 * (lc + la)
    heart = _ellipse(u, v, p["heart_shift"] + 0.15 * width, p["dome"] - dome_h[1] - 0.05, width / 2, heart_h, edge, -0.25)
    heart *= _ramp(dome_v - v + 0.02, 2 * edge)
    visible = lung * (1 - 0.8 * heart)

    # mediastinum, spine, trachea, aortic knob, hila, abdomen
    med = _ramp(0.1 - au, 3 * edge) * _ramp(v + 0.95, 4 * edge)
    spine = _ramp(0.06 - au, edge) * (0.06 + 0.025 * _teeth(v / 0.09))
    trachea = _ramp(0.028 - np.abs(u - 0.01), edge) * _ramp(-0.3 - v, 2 * edge) * body
    density += 0.09 * med * (1 - heart) + spine + 0.1 * heart - 0.12 * trachea
    density += 0.1 * _ellipse(u, v, 0.12, -0.34, 0.06, 0.055, edge)
    density += 0.08 * _gauss(au, v, 0.16, -0.06, 0.04, 0.07) * lung
    density += 0.1 * (1 - above) * body * _ramp(lc + la + 0.05 - au, 0.2)

    # ribs (posterior arcs, fainter anterior ones) and clavicles
    cage = _ramp((1 - np.sqrt(((au - lc) / (la + 0.06)) ** 2 + ((v - vc) / (lb + 0.05)) ** 2)) * la, 4 * edge)
    ribs = _teeth((v - 0.12 * au - p["rib_curv"] * au**2) / p["rib_sp"] + p["rib_phase"])
    ribs += 0.5 * _teeth((v + 0.45 * au) / (1.15 * p["rib_sp"]) + p["rib_phase2"], 0.3) * _ramp(au - 0.3, 0.2)
    density += p["rib_amp"] * ribs * cage * (0.3 + 0.7 * above) * (1 - 0.6 * heart) * (1 - 0.5 * med)
    clav = _segment_distance(au, v, (0.1, p["clav_v"]), (0.6, p["clav_v"] - p["clav_drop"]))
    density += 0.09 * _ramp(p["clav_w"] - clav, edge)
    density += 0.12 * _ellipse(au, v, bw * 0.97, -0.8, 0.16, 0.14, 3 * edge) * body  # humeral heads

    # breast shadows, gastric bubble
    if p["breast"] > 0:
        density += p["breast"] * _ellipse(au, v, lc + 0.15, p["breast_v"], 0.38, 0.22, edge) * _ramp(v - p["breast_v"] + 0.15, 0.4)
    if p["nipples"] > 0:
        nu, nv = lc + 0.08 + p["nipple_du"], p["breast_v"] + p["nipple_dv"]
        density += p["nipples"] * _ellipse(au, v, nu, nv, 0.035, 0.03, edge)
    if p["fold"] > 0:
        fold_line = p["fold_u"] + 0.15 * (v - 0.1) ** 2 - np.sign(p["fold_side"]) * u
        density += p["fold"] * _ramp(0.5 * edge - np.abs(fold_line), edge) * _ramp(0.45 - np.abs(v - 0.05), 0.2) * body
    density += p["scapula"] * _ramp(au - 0.52 - 0.12 * (v + 0.7), 2 * edge) * _ramp(-0.05 - v, 0.3) * body
    if p["bubble"] > 0:
        density -= 0.13 * _ellipse(u, v, p["bubble_u"], dome[1] + 0.05 * p["bubble"], 0.08 * p["bubble"], 0.045 * p["bubble"], edge)

    # the findings: opacity replaces lung air, extra adds density, hyper darkens, markings may vanish
    opacity = np.zeros_like(u)
    extra = np.zeros_like(u)
    hyper = np.ones_like(u)
    keep_markings = np.ones_like(u)

    def add_opacity(field):
        nonlocal opacity
        opacity = 1 - (1 - opacity) * (1 - _clip(field, 0, 1))

    def side_mask(side):
        return _ramp(side * u - 0.04, edge)

    if "Atelectasis" in s:
        g, e, side = frng["Atelectasis"], s["Atelectasis"], side_of["Atelectasis"]
        if g.uniform() < 0.55:  # plate-like band above the raised dome
            cu, cv_ = _lung_point(g, p, side, (0.72, 0.9), (0.3, 0.65))
            cv_ -= 0.04 + 0.06 * e
            band = _ellipse(u, v, cu, cv_, g.uniform(0.12, 0.22), g.uniform(0.02, 0.03) + 0.02 * e, edge, g.normal(0, 0.2))
            add_opacity((0.25 + 0.5 * e) * band)
        else:  # collapsed lower lobe: a wedge from the hilum to the medial dome
            cv_ = dome[(side + 1) // 2] - dome_h[(side + 1) // 2] - 0.12
            wedge = _ellipse(u, v, side * (0.2 + 0.05 * g.uniform()), cv_, 0.06 + 0.04 * e, 0.15 + 0.06 * e, edge, -side * 0.4)
            add_opacity((0.2 + 0.45 * e) * wedge)
            extra += 0.04 * wedge

    if "Effusion" in s:
        g, e = frng["Effusion"], s["Effusion"]
        which = g.uniform()
        for side in (-1, 1) if which < 0.2 else ((-1,) if which < 0.6 else (1,)):
            height = 0.04 + 0.35 * e**1.5 * g.uniform(0.6, 1.0)
            rise = g.uniform(0.1, 0.25) * (0.5 + e)
            lateral = _clip((au - lc + 0.1) / (la + 0.1), 0, 1)
            level = dome[(side + 1) // 2] - height - rise * lateral * lateral * lateral  # meniscus
            fluid = _ramp(v - level, 0.04 + 2 * edge) * side_mask(side) * cage
            add_opacity(0.95 * fluid)
            extra += 0.04 * fluid

    if "Infiltration" in s:
        g, e = frng["Infiltration"], s["Infiltration"]
        side = side_of["Infiltration"]
        field = np.zeros_like(u)
        for _ in range(int(g.integers(2, 5))):
            cu, cv_ = _lung_point(g, p, side if g.uniform() < 0.8 else -side, (0.1, 0.9), (0.15, 0.85))
            r = g.uniform(0.06, 0.12)
            field += _gauss(u, v, cu, cv_, r, r * g.uniform(0.8, 1.4))
        add_opacity((0.12 + 0.33 * e) * _clip(field, 0, 1) * (0.3 + 0.9 * patch))

    if "Mass" in s:
        g, e = frng["Mass"], s["Mass"]
        cu, cv_ = _lung_point(g, p, side_of["Mass"], (0.05, 0.85), (0.2, 0.8))
        r = 0.08 + 0.07 * e
        mass = _ellipse(u, v, cu, cv_, r, r * g.uniform(0.85, 1.1), 1.5 * edge)
        for _ in range(2):  # lobulation
            a = g.uniform(0, 2 * np.pi)
            ca, sa = float(np.cos(a)), float(np.sin(a))
            mass = np.maximum(mass, _ellipse(u, v, cu + 0.5 * r * ca, cv_ + 0.5 * r * sa, 0.6 * r, 0.6 * r, 1.5 * edge))
        add_opacity((0.3 + 0.5 * e) * mass)
        extra += 0.04 * e * mass

    if "Nodule" in s:
        g, e = frng["Nodule"], s["Nodule"]
        for i in range(1 if g.uniform() < 0.75 else int(g.integers(2, 4))):
            side = side_of["Nodule"] if i == 0 else (-1 if g.uniform() < 0.5 else 1)
            cu, cv_ = _lung_point(g, p, side, (0.05, 0.9), (0.15, 0.85))
            r = 0.025 + 0.03 * e * g.uniform(0.7, 1.0)
            nodule = _ellipse(u, v, cu, cv_, r, r, edge)
            add_opacity((0.3 + 0.5 * e) * nodule)
            extra += 0.05 * e * nodule

    if "Pneumonia" in s:
        g, e, side = frng["Pneumonia"], s["Pneumonia"], side_of["Pneumonia"]
        apex = vc - lb
        base = dome[(side + 1) // 2] - dome_h[(side + 1) // 2]
        fissure = apex + g.uniform(0.45, 0.55) * (base - apex)
        if g.uniform() < 0.4:  # upper lobe, sharp at the fissure below
            lobe = _ramp(fissure - v, edge) * _ramp(v - apex - 0.1 * g.uniform(), 0.2)
        else:  # lower lobe, fading upwards
            lobe = _ramp(v - fissure - 0.05 * g.uniform(), 0.25)
        t0 = g.uniform(0.0, 0.5)  # part of the lobe only
        extent = _ramp(side * u - (lc - la + t0 * 2 * la), 0.15)
        add_opacity((0.2 + 0.5 * e) * lobe * extent * side_mask(side) * (0.6 + 0.4 * patch) * (1 - 0.35 * vessel))

    if "Pneumothorax" in s:
        g, e, side = frng["Pneumothorax"], s["Pneumothorax"], side_of["Pneumothorax"]
        k = 0.97 - 0.3 * e
        cu, cv_ = lc - la + k * la, vc + lb - k * lb  # the lung shrinks towards its medial base
        r2 = np.sqrt(((au - cu) / (k * la)) ** 2 + ((v - cv_) / (k * lb)) ** 2)
        collapsed = _ramp((1 - r2) * k * la, edge)
        gap = lung * side_mask(side) * (1 - collapsed)
        hyper += (0.1 + 0.2 * e) * gap
        keep_markings *= 1 - gap
        pleural = np.exp(-(((r2 - 1) * k * la / (0.7 * edge)) ** 2)) * lung * side_mask(side) * _ramp(dome_v - v - 0.05, 0.05)
        extra += (0.04 + 0.06 * e) * pleural
        add_opacity(0.2 * e * collapsed * side_mask(side))

    if "Consolidation" in s:
        g, e = frng["Consolidation"], s["Consolidation"]
        cu, cv_ = _lung_point(g, p, side_of["Consolidation"], (0.35, 0.9), (0.25, 0.75))
        region = np.zeros_like(u)
        for _ in range(3):
            r = g.uniform(0.07, 0.13) * (0.8 + 0.4 * e)
            region = np.maximum(region, _ellipse(u, v, cu + g.normal(0, 0.06), cv_ + g.normal(0, 0.06), r, r * g.uniform(0.7, 1.2), 2 * edge))
        add_opacity((0.35 + 0.5 * e) * region * (0.85 + 0.15 * patch))

    if "Edema" in s:
        g, e = frng["Edema"], s["Edema"]
        su, sv = g.uniform(0.12, 0.22), g.uniform(0.18, 0.3)
        lopsided = np.where(right, np.float32(g.uniform(0.7, 1.0)), np.float32(g.uniform(0.7, 1.0)))
        haze = _gauss(au, v, 0.18, vc - 0.05, su, sv) * (0.6 + 0.4 * patch) * lopsided
        add_opacity((0.15 + 0.5 * e) * haze)
        extra += 0.03 * e * vessel * lung * _ramp(vc - 0.2 - v, 0.3)  # upper-lobe diversion

    if "Emphysema" in s:
        g, e = frng["Emphysema"], s["Emphysema"]
        keep_markings *= 1 - 0.6 * e * _ramp(lung_r - 0.55, 0.3)
        if g.uniform() < 0.5:  # a bulla
            cu, cv_ = _lung_point(g, p, -1 if g.uniform() < 0.5 else 1, (0.0, 0.3), (0.3, 0.8))
            r = g.uniform(0.07, 0.13)
            bulla = _ellipse(u, v, cu, cv_, r, r, edge)
            hyper += 0.25 * bulla * lung
            keep_markings *= 1 - bulla
            extra += 0.05 * np.exp(-((np.sqrt((u - cu) ** 2 + (v - cv_) ** 2) - r) / (0.7 * edge)) ** 2) * lung

    if "Fibrosis" in s:
        g, e = frng["Fibrosis"], s["Fibrosis"]
        where = _ramp(v - vc + 0.1, 0.5) * _ramp(lung_r - 0.35, 0.4) * lung
        lopsided = np.where(right, np.float32(g.uniform(0.6, 1.0)), np.float32(g.uniform(0.6, 1.0)))
        extra += (0.05 + 0.15 * e) * fine * where * lopsided
        add_opacity(0.25 * e * where)

    if "Pleural_Thickening" in s:
        g, e, side = frng["Pleural_Thickening"], s["Pleural_Thickening"], side_of["Pleural_Thickening"]
        thick = (0.025 + 0.05 * e) * (0.6 + 0.8 * patch)
        inside = (1 - lung_r) * la  # about the distance in from the lung edge
        if g.uniform() < 0.35:  # apical cap
            window = _ramp(vc - lb + 0.35 - v, 0.1)
        else:
            top = vc - lb + g.uniform(0.2, 0.6)
            window = _ramp(v - top, 0.1) * _ramp(top + g.uniform(0.3, 0.6) - v, 0.1) * _ramp(au - lc, 0.1)
        band = _ramp(thick - inside, edge) * lung * window * side_mask(side)
        add_opacity((0.5 + 0.4 * e) * band)
        extra += 0.04 * e * band

    if "Hernia" in s:
        g, e = frng["Hernia"], s["Hernia"]
        r = 0.07 + 0.06 * e
        cu, cv_ = g.uniform(0.0, 0.1), dome[1] - dome_h[1] - 0.5 * r
        sac = _ellipse(u, v, cu, cv_, r * g.uniform(1.0, 1.3), r, edge)
        extra += (0.04 + 0.04 * e) * sac
        add_opacity(sac)
        if g.uniform() < 0.7:  # air-fluid level
            extra -= 0.22 * sac * _ramp(cv_ - g.uniform(0.0, 0.5) * r - v, edge)

    # compose: air in the lungs, its markings, the findings
    marks = p["haze"] * _crop(tex["patch"], p["haze_tex"]) + p["markings"] * vessel * (0.35 + _gauss(au, v, 0.18, vc - 0.05, 0.22, 0.35)) * keep_markings
    density += (marks - air * hyper * (0.8 + 0.2 * _ramp(v - vc + lb - 0.3, 0.5))) * visible * (1 - opacity)
    density += extra
    if p["marker"]:
        mx = -0.82 if p["marker"] == 1 else 0.82
        density = np.maximum(density, 0.95 * _ramp(0.05 - np.maximum(np.abs(xx - mx), np.abs(yy + 0.86)), 2 / size))

    # acquisition: window, a gamma-like curve, heel effect, quantum noise
    image = _clip(p["offset"] + p["gain"] * density, 0.0, 1.0)
    image = image / (image + p["gamma"] * (1 - image) + 1e-6)
    image = image * (1 + p["heel"] * yy) + (p["noise_sd"] * 12**0.5) * p["noise"]
    return _clip(image, 0, 1).astype(np.float32)


# --- a figure and the dataset -----------------------------------------------------------------------


def finding_gallery(size: int = 64, seed: int = 0, severity: float | None = 0.8) -> tuple[np.ndarray, list[str]]:
    """One synthetic patient without findings, then with each finding alone: ``(15, size, size)`` and titles."""
    rows = np.vstack([np.zeros(len(FINDINGS)), np.eye(len(FINDINGS))])
    images = np.stack([render(r, size, np.random.default_rng(seed), severity=severity) for r in rows])
    return images, ["No finding"] + list(FINDINGS)


@dataclass(frozen=True)
class ChestXraySpec:
    """How to generate one split."""

    n: int
    image_size: int = 64
    seed: int = 0
    prevalence_floor: float = 0.02  # each finding at least this frequent (Hernia is 0.2% in ChestX-ray14)


class SyntheticChestXrays(Dataset):
    """A split of synthetic chest radiographs: ``(image, labels)``, a float32 ``(1, S, S)`` image in [0, 1]
    and float32 multi-hot ``(14,)`` labels in FINDINGS order.

    All images are generated at construction from ``spec.seed`` (the same seed gives the same data).
    ``images`` holds them as uint8 ``(N, 1, S, S)`` (8-bit, like ChestX-ray14's PNGs; a quarter of the
    memory of floats), converted to float in ``__getitem__``; ``targets`` holds the labels ``(N, 14)``.
    """

    classes = FINDINGS

    def __init__(self, spec: ChestXraySpec, transform=None):
        self.spec = spec
        self.transform = transform
        rng = np.random.default_rng(spec.seed)
        labels = sample_findings(spec.n, rng, spec.prevalence_floor)
        size = spec.image_size
        images = np.empty((spec.n, 1, size, size), dtype=np.uint8)
        for i, row in enumerate(labels):
            images[i, 0] = np.rint(render(row, size, rng) * 255)
        self.images = torch.from_numpy(images)
        self.targets = torch.from_numpy(labels)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int):
        image = self.images[index].float() / 255
        return (self.transform(image) if self.transform is not None else image), self.targets[index]

    @property
    def info(self) -> dict:
        return {
            "kind": "synthetic",
            "name": "synthetic-chest-xrays",
            "generator": "medlab.data.synth.chest_xrays",
            "n": len(self),
            "image_size": self.spec.image_size,
            "seed": self.spec.seed,
            "prevalence_floor": self.spec.prevalence_floor,
            "finding_counts": self.targets.sum(0).long().tolist(),
            "no_finding": int((self.targets.sum(1) == 0).sum()),
        }


def chestxray14_lookalike(
    split: str,
    n: int | None = None,
    image_size: int = 64,
    prevalence_floor: float = 0.02,
    seed: int = 2020,
    transform=None,
) -> SyntheticChestXrays:
    """Synthetic radiographs standing in for ChestX-ray14's ``split``: ``n`` images drawn with
    :func:`medlab.data.splits.split_seed` of ``seed`` (what ``load("chestxray14", split, n=n)`` returns)."""
    require_n(n, "the synthetic radiographs need n, the number of images of the split")
    spec = ChestXraySpec(
        n=n, image_size=image_size, prevalence_floor=prevalence_floor, seed=split_seed(seed, split)
    )
    return SyntheticChestXrays(spec, transform=transform)
