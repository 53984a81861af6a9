"""Assemble the shipped demo files from a finished training run, check them through the ordinary loaders,
judge them, and write the model cards.

    python -m training.export

nodes/sd/demo/nodegraph-demo.safetensors   single-file SD1 layout: model.diffusion_model.* (UNet),
                                           first_stage_model.* (VAE), cond_stage_model.transformer.* (CLIP)
nodes/sd/demo/nodegraph-demo-lora.safetensors        kohya LoRA (rank 4)
nodes/sd/demo/nodegraph-demo-controlnet.safetensors  original-layout ControlNet (control_model.*)
and a `<name>.md` model card next to each. Weights are stored fp16 (the loaders cast to the device's
compute dtype; the judges are run on the fp16 files, so the cards' figures are what ships).
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from nodes.sd.checkpoint import CLIP_PREFIX, UNET_PREFIX, VAE_PREFIX
from training import data
from training.common import (CHECKPOINT_NAME, CONTROLNET_NAME, DEMO_DIR, LORA_NAME, TEXT_HIDDEN, TEXT_LAYERS,
                             UNET_CONFIG, VAE_CONFIG, WORK_DIR, read_json, setup)

DTYPE = torch.float16


def assemble_checkpoint(work: Path, out: Path) -> dict:
    sd = {}
    for prefix, name in ((UNET_PREFIX, "unet"), (VAE_PREFIX, "vae"), (CLIP_PREFIX, "text")):
        for k, v in load_file(str(work / f"{name}.safetensors")).items():
            sd[prefix + k] = (v.to(DTYPE) if v.is_floating_point() else v).contiguous()
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(sd, str(out), metadata={"format": "pt", "nodegraph.demo": "1",
                                      "description": "nodegraph demo model: SD1 architecture, trained on "
                                                     "procedural 64x64 coloured shapes"})
    out.chmod(0o644)  # an ordinary file mode, like the copied LoRA / ControlNet
    return sd


def unpack_shipped_checkpoint(work: Path, source: Path | None = None) -> None:
    """The inverse of assemble_checkpoint: the shipped checkpoint's UNet, VAE and text encoder as the
    work folder's unet / vae / text.safetensors (float32 of the fp16 files), unless they are there.
    A LoRA or ControlNet trained on them is trained on exactly the base that ships."""
    work.mkdir(parents=True, exist_ok=True)
    names = {UNET_PREFIX: "unet", VAE_PREFIX: "vae", CLIP_PREFIX: "text"}
    if all((work / f"{n}.safetensors").exists() for n in names.values()):
        return
    sd = load_file(str(source or DEMO_DIR / CHECKPOINT_NAME))
    for prefix, name in names.items():
        part = {k[len(prefix):]: (v.float() if v.is_floating_point() else v).contiguous()
                for k, v in sd.items() if k.startswith(prefix)}
        save_file(part, str(work / f"{name}.safetensors"))


def judge_shipped(n: int = 60, seed: int = 0) -> dict:
    """The tests' judgements, through the real loaders, on the files in nodes/sd/demo."""
    from tests.demo import harness
    from tests.demo.judge import judge
    from training.evaluate import control_iou

    demo = harness.load_demo()
    specs = data.heldout_prompts(n)
    images = harness.generate(demo, [s.caption for s in specs], seed=seed)
    verdicts = [judge(im) for im in images]
    out = {"heldout_prompts": n,
           "colour_acc": float(np.mean([v.colour == s.colour for v, s in zip(verdicts, specs)])),
           "shape_acc": float(np.mean([v.shape == s.shape for v, s in zip(verdicts, specs)])),
           "fill_base": float(np.mean([v.fill for v in verdicts]))}
    shapes = {}
    for v, s in zip(verdicts, specs):
        shapes.setdefault(s.shape, []).append(v.shape == s.shape)
    out["shape_acc_by_shape"] = {k: float(np.mean(v)) for k, v in sorted(shapes.items())}
    train_specs = [data.sample_spec(np.random.default_rng([seed, i]), "train") for i in range(n)]
    tv = [judge(im) for im in harness.generate(demo, [s.caption for s in train_specs], seed=seed)]
    out["train_combo_colour_acc"] = float(np.mean([v.colour == s.colour for v, s in zip(tv, train_specs)]))
    out["train_combo_shape_acc"] = float(np.mean([v.shape == s.shape for v, s in zip(tv, train_specs)]))
    if harness.LORA.exists():
        model, clip = harness.with_lora(demo, 1.0)
        lv = [judge(im) for im in harness.generate(demo, [s.caption for s in specs], seed=seed, model=model, clip=clip)]
        out["fill_lora_1"] = float(np.mean([v.fill for v in lv]))
        out["lora_colour_acc"] = float(np.mean([v.colour == s.colour for v, s in zip(lv, specs)]))
    if harness.CONTROLNET.exists():
        plain = [s for s in data.heldout_prompts(2 * n, seed=seed + 5) if len(s.background) == 1][:n // 2]
        edges = harness.canny(np.stack([data.render(s) for s in plain]))
        for strength, key in ((1.0, "controlnet_iou"), (0.0, "controlnet_iou_strength_0")):
            ims = harness.generate(demo, [s.caption for s in plain], seed=seed,
                                   control=harness.controlnet(edges, strength))
            ious = control_iou(ims, edges.numpy())
            out[key] = float(np.mean(ious))
            if strength == 1.0:
                out["controlnet_iou_min"] = float(np.min(ious))
                out["controlnet_frac_iou_ge_0.7"] = float(np.mean(np.array(ious) >= 0.7))
        # prompts that name another position than the edges show: the edges must win
        wrong = [data.caption_of(s.colour, s.shape, s.background, data.other_position(s.position)) for s in plain]
        for strength, key in ((1.0, "controlnet_iou_wrong_position"), (0.0, "controlnet_iou_wrong_position_strength_0")):
            ims = harness.generate(demo, wrong, seed=seed, control=harness.controlnet(edges, strength))
            out[key] = float(np.mean(control_iou(ims, edges.numpy())))
    return out


def size_mb(path: Path) -> float:
    return round(path.stat().st_size / 1e6, 2)


def fmt(x, nd=3):
    return f"{x:.{nd}f}" if isinstance(x, float) else str(x)


def write_cards(work: Path, judged: dict) -> None:
    vae, unet = read_json(work / "vae_metrics.json"), read_json(work / "unet_metrics.json")
    lora, cn = read_json(work / "lora_metrics.json"), read_json(work / "controlnet_metrics.json")
    hist = "\n".join(f"| {h['step']} | {fmt(h['loss_smoothed'], 4)} | {fmt(h['heldout_colour_acc'], 2)} | "
                     f"{fmt(h['heldout_shape_acc'], 2)} |" for h in unet.get("history", []))
    ckpt = DEMO_DIR / CHECKPOINT_NAME
    dataset = f"""## Data
Procedural, generated on the fly from a seed by `training/data.py`: 64×64 images of one shape
({", ".join(data.SHAPES)}) in one of {len(data.COLOURS)} colours ({", ".join(data.COLOURS)}) on a plain or two-tone
background (white, gray, black), at one of five positions (top left, top right, bottom left, bottom
right, center, ±3 px) with a radius of {data.RADIUS_RANGE[0]:.0f}–{data.RADIUS_RANGE[1]:.0f} px. Captions:
`a red circle on a white background, top left`, `a blue star on a gray and black background, center`.
Held out: the (colour, shape) pairs {sorted(data.HELD_OUT_COMBOS)} never occur in training; all the
judged prompts below use only those pairs.
"""
    judges = f"""## Judged (deterministic: colour histograms and opencv contours, `tests/demo/judge.py`)
Generated through the ordinary loaders and the KSampler pipeline from the fp16 files shipped here,
{judged.get('heldout_prompts')} held-out prompts, euler, 12 steps, CFG 5, empty negative prompt, 64×64, seed 0:

| metric | value |
|---|---|
| dominant colour matches the prompt (held-out pairs) | {fmt(judged.get('colour_acc'), 3)} |
| shape class matches the prompt (held-out pairs) | {fmt(judged.get('shape_acc'), 3)} |
| shape accuracy per shape | {judged.get('shape_acc_by_shape')} |
| colour / shape on training pairs | {fmt(judged.get('train_combo_colour_acc'), 3)} / {fmt(judged.get('train_combo_shape_acc'), 3)} |
"""
    (DEMO_DIR / (Path(CHECKPOINT_NAME).stem + ".md")).write_text(f"""# nodegraph-demo.safetensors

A tiny model of the Stable Diffusion 1.x architecture, trained from scratch by this project (`training/`, about
15 minutes on one lent H100; the same scripts run on a CPU), so that nodegraph draws what it is told with no
download. It draws one coloured shape on a plain or two-tone background; it knows no other words. Single-file SD1 layout: `model.diffusion_model.*`,
`first_stage_model.*`, `cond_stage_model.transformer.*`; fp16; {size_mb(ckpt)} MB. Loads through the
ordinary checkpoint loader and model detection (real SD1.5 files load through the same code).

| part | architecture | parameters |
|---|---|---|
| UNet | SD1 UNet, model_channels {UNET_CONFIG.model_channels}, channel_mult {UNET_CONFIG.channel_mult}, {UNET_CONFIG.num_res_blocks} ResBlock per level, attention at both levels and the middle, context {UNET_CONFIG.context_dim} | {unet.get('unet_params')} |
| text encoder | CLIP text transformer, width {TEXT_HIDDEN}, {TEXT_LAYERS} layers, 1 head, the real CLIP BPE vocabulary (49408) and ComfyUI's SD1 tokenizer | {unet.get('text_params')} |
| VAE | SD1 KL autoencoder, ch {VAE_CONFIG.ch}, ch_mult {VAE_CONFIG.ch_mult}, f = 8, 4 latent channels | {vae.get('params')} |

Use: 64×64 (EmptyLatentImage 64×64), CFG 4–7, 12–20 steps of euler / dpmpp_2m, an empty negative
prompt. Latent scale is SD1's 0.18215 (the VAE was reparametrised so scaled latents have unit variance).

{dataset}
## Training (`training/README.md` has the commands)
* VAE: `python -m training.train_vae` — {vae.get('steps')} steps of {vae.get('batch')} whole 64×64 images drawn from a
  pool of {vae.get('pool')} scenes (15% outlined); shape-weighted (×{vae.get('shape_weight')}) L1 + MSE, {vae.get('chroma_weight')}·L1 on
  Cb/Cr, Sobel-edge L1, {vae.get('kl_weight')}·KL; AdamW lr {vae.get('lr')} cosine. Held-out PSNR
  **{fmt(vae.get('heldout_psnr_db'), 2)} dB** (posterior mean, held-out images); mean error of the shape's colour after a
  round trip {fmt(vae.get('heldout_shape_colour_error'), 1)}/255.
  Latent std after ×0.18215 on held-out images: {[round(x, 2) for x in vae.get('scaled_latent_std_heldout', [])]}.
* UNet + text encoder, jointly: `python -m training.train_unet` — {unet.get('steps')} steps, batch {unet.get('batch')},
  {unet.get('images')} training images (VAE latents, posterior sampled), ε-prediction on SD1's schedule,
  min-SNR-5 weighting, caption dropout {unet.get('caption_dropout')}, AdamW lr {unet.get('lr')} (text {unet.get('text_lr')}),
  EMA {unet.get('ema')} (exported). Final smoothed loss {fmt(unet.get('final_loss_smoothed'), 4)}.
  The text encoder is trained, not frozen: see `training/train_unet.py` for why.

Progress on held-out prompts during training (EMA weights):

| step | loss | colour acc | shape acc |
|---|---|---|---|
{hist}

Training loops' wall time: VAE {vae.get('train_seconds_this_run')} s, UNet + text encoder
{unet.get('train_seconds_this_run')} s, LoRA {lora.get('train_seconds_this_run')} s, ControlNet {cn.get('train_seconds_this_run')} s, on
{unet.get('machine')} (training/README.md has the whole run's times).

{judges}
## Limits
64×64 only (8×8 latents); one shape per image; six colours, four shapes, three backgrounds, five
positions. Anything else in a prompt is an untrained token. It exists to make the product and its tests
meaningful offline, not to make pictures.
""")
    if (DEMO_DIR / LORA_NAME).exists():
        (DEMO_DIR / (Path(LORA_NAME).stem + ".md")).write_text(f"""# nodegraph-demo-lora.safetensors

A rank-{lora.get('rank')} LoRA for `nodegraph-demo.safetensors` that teaches a style the base model never saw:
shapes drawn as a thick **outline** instead of filled. kohya format (`lora_unet_<diffusers path>.lora_down /
.lora_up / .alpha`, alpha = rank), fp16, {size_mb(DEMO_DIR / LORA_NAME)} MB, {lora.get('layers')} UNet layers (attention
q/k/v/out, feed-forward, proj_in/out, ResBlock convs), {lora.get('params')} parameters. No text-encoder part and no
trigger word: use the ordinary captions.

## Data
The demo data set (`training/data.py`) drawn with `style="outlined"` (a 3.5 px border), training
(colour, shape) pairs only, {lora.get('images')} images.

## Training
`python -m training.train_lora` — up ("B") initialised to 0, down N(0, 1/fan_in); {lora.get('steps')} steps, batch
{lora.get('batch')}, AdamW lr {lora.get('lr')}, caption dropout 0.1, the base UNet and text encoder frozen. Final smoothed
loss {fmt(lora.get('final_loss_smoothed'), 4)}.

## Judged
Style metric: **fill** = fraction of the shape's outer contour that is shape-coloured (filled ≈ 1,
the training outlines ≈ 0.65). On {judged.get('heldout_prompts')} held-out prompts (euler, 12 steps, CFG 5):
fill **{fmt(judged.get('fill_base'))}** without the LoRA, **{fmt(judged.get('fill_lora_1'))}** at strength 1 (colour still
right in {fmt(judged.get('lora_colour_acc'), 3)}); at strength 0 the output is bit-identical to no LoRA.
""")
    if (DEMO_DIR / CONTROLNET_NAME).exists():
        (DEMO_DIR / (Path(CONTROLNET_NAME).stem + ".md")).write_text(f"""# nodegraph-demo-controlnet.safetensors

A Canny ControlNet for `nodegraph-demo.safetensors`: the shape follows the edge map's position and size.
Original ControlNet layout (`control_model.*`: a copy of the UNet encoder, a hint block taking the
64×64 edge map to the 8×8 latent, zero convolutions), fp16, {size_mb(DEMO_DIR / CONTROLNET_NAME)} MB, {cn.get('params')} parameters.

Use: Canny node with low_threshold {cn.get('canny', ['?'])[0]}, high_threshold {cn.get('canny', ['?', '?'])[1]} (the thresholds it was
trained with; ComfyUI's defaults 0.4 / 0.8 miss the edges of light colours on light backgrounds), Apply
ControlNet strength 1.

## Data
Canny edges (the project's Canny, kornia's threshold scale) of {cn.get('images')} images of the demo data set's
training split, with their captions.

## Training
`python -m training.train_controlnet` — initialised from the trained UNet's encoder, zero convs at 0;
UNet and text encoder frozen; {cn.get('steps')} steps, batch {cn.get('batch')}, AdamW lr {cn.get('lr')}, caption dropout 0.1.
Final smoothed loss {fmt(cn.get('final_loss_smoothed'), 4)}.

## Judged
Mask of the generated shape (filled outer contour of its saturated pixels) against the region the edge
map encloses, on held-out prompts with plain backgrounds (euler, 12 steps, CFG 5): mean IoU
**{fmt(judged.get('controlnet_iou'))}** (minimum {fmt(judged.get('controlnet_iou_min'))}, {fmt(judged.get('controlnet_frac_iou_ge_0.7'), 2)} of images ≥ 0.7);
the same prompts with the ControlNet at strength 0: {fmt(judged.get('controlnet_iou_strength_0'))} (the prompt names the
position too). With prompts that name a *different* position than the edges show, the edges win: IoU
**{fmt(judged.get('controlnet_iou_wrong_position'))}**, against {fmt(judged.get('controlnet_iou_wrong_position_strength_0'))} at strength 0. Trained with
{cn.get('other_caption')} of the captions' position phrases dropped or replaced, so that the net had to read the edges.
""")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", default=str(WORK_DIR))
    ap.add_argument("--no-judge", action="store_true")
    ap.add_argument("--force", action="store_true", help="ship to nodes/sd/demo even if the judges fail")
    args = ap.parse_args(argv)
    setup(0)
    work = Path(args.work)
    # Assemble and judge a candidate in the work folder; only what passes the tests' thresholds is copied
    # to nodes/sd/demo (where tests/demo and the product pick it up).
    global DEMO_DIR
    ship_dir, DEMO_DIR = DEMO_DIR, work / "candidate"
    import os

    os.environ["NODEGRAPH_DEMO_DIR"] = str(DEMO_DIR)  # the harness (imported later) judges these files
    DEMO_DIR.mkdir(parents=True, exist_ok=True)
    assemble_checkpoint(work, DEMO_DIR / CHECKPOINT_NAME)
    for src, name in (("lora.safetensors", LORA_NAME), ("controlnet.safetensors", CONTROLNET_NAME)):
        if (work / src).exists():
            shutil.copyfile(work / src, DEMO_DIR / name)
    # the ordinary loaders must take them
    from nodes.sd.checkpoint import load_checkpoint
    from nodes.sd.clip.clip import load_clip_from_state_dict

    ckpt = load_checkpoint(DEMO_DIR / CHECKPOINT_NAME, device="cpu", use_cache=False)
    load_clip_from_state_dict(ckpt.clip_state_dict)
    assert ckpt.unet_config == UNET_CONFIG and ckpt.vae_config == VAE_CONFIG, (ckpt.unet_config, ckpt.vae_config)
    judged = read_json(work / "judged.json") if args.no_judge else judge_shipped()
    (work / "judged.json").write_text(json.dumps(judged, indent=2))
    write_cards(work, judged)
    total = sum(p.stat().st_size for p in DEMO_DIR.glob("*.safetensors")) / 1e6
    print(json.dumps(judged, indent=2))
    print(f"wrote the candidate to {DEMO_DIR} ({total:.1f} MB of weights)")
    failed = [name for name, ok in (
        ("colour >= 0.95", judged.get("colour_acc", 0) >= 0.95), ("shape >= 0.80", judged.get("shape_acc", 0) >= 0.80),
        ("LoRA fill drop >= 0.15", judged.get("fill_base", 0) - judged.get("fill_lora_1", 1) >= 0.15),
        ("ControlNet IoU >= 0.7", judged.get("controlnet_iou", 0) >= 0.7)) if not ok]
    if failed and not args.force:
        print(f"NOT shipped to {ship_dir}: the judges fail ({', '.join(failed)}); --force ships anyway")
        return
    ship_dir.mkdir(parents=True, exist_ok=True)
    for f in DEMO_DIR.iterdir():
        shutil.copyfile(f, ship_dir / f.name)
    print(f"shipped to {ship_dir}")


if __name__ == "__main__":
    main()
