"""Masked-autoencoder pre-training (He et al., 2022) of the fine-tuning model's timm ViT.

The recipe pre-trains its ViT-L on the train + testa images (labels unused) before any
fine-tuning. Here the encoder *is* the timm ``VisionTransformer`` that ``webfg.model``
fine-tunes (same ``arch``/``arch_kwargs``), so the written checkpoint is in timm's key
layout and a model entry starts from it with ``pretrained_file``:

- each image is cut into the encoder's token grid; a random 75 % of the patches per
  sample is masked. Masked pixels are zeroed before the patch embedding, so a
  convolutional stem (hybrid ViT) cannot see them, and only the visible tokens (plus the
  class token) go through the encoder's blocks;
- a light decoder (a few timm ``Block``s, narrow) gets the encoded tokens and a shared
  mask token at every masked position, and predicts each patch's pixels;
- the loss is the MSE on the masked patches against per-patch normalised pixels.

Position tables are fixed 2-D sin-cos during pre-training (as in MAE) and written into
the encoder's ``pos_embed``, which fine-tuning then trains.

It runs on the fine-tuning engine (webfg.engine): device placement, bf16/fp16 autocast,
DDP under torchrun or srun, gradient accumulation, mid-epoch checkpoints, SIGUSR1/
SIGTERM/SIGINT save-and-requeue, bit-identical resume. Each sample's crop and mask
derive from its place in the epoch's order, so N processes with batch B give the
weights of one process with batch N·B.

    webfg pretrain-mae --config mae.yaml --root data/demo \
        --train-list results/clean/train.txt --unlabelled results/clean/testa.txt --out enc.pth
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import torch
import torch.nn as nn

from webfg import distributed
from webfg.checkpoint import fingerprint, save_torch
from webfg.config import MAEConfig
from webfg.data import EpochSampler, SeededImageList
from webfg.engine import (
    Engine,
    head_lr,
    loader_workers,
    make_loader,
    resolve_accumulation,
    resolve_precision,
    threads_per_process,
)
from webfg.io import InputError, read_split_list, read_yaml
from webfg.layout import history_of, state_dir_of


class MaskedAutoencoder(nn.Module):
    """A timm ViT encoder (``self.encoder``) plus MAE's light decoder."""

    def __init__(self, cfg: MAEConfig):
        super().__init__()
        import timm
        from timm.layers import build_sincos2d_pos_embed
        from timm.models.vision_transformer import Block, VisionTransformer

        kwargs = {"drop_path_rate": cfg.drop_path, **cfg.arch_kwargs}
        encoder = timm.create_model(cfg.arch, pretrained=False, num_classes=0, **kwargs)
        if not isinstance(encoder, VisionTransformer):
            raise ValueError(f"MAE pre-training needs a timm VisionTransformer; {cfg.arch} is {type(encoder).__name__}")
        if encoder.pos_embed is None:
            raise ValueError(f"{cfg.arch}: MAE pre-training needs an absolute position table (pos_embed)")
        self.cfg = cfg
        self.encoder = encoder
        self.grid = tuple(encoder.patch_embed.grid_size)
        img = tuple(encoder.patch_embed.img_size)
        if img != (cfg.img_size, cfg.img_size) or img[0] % self.grid[0] or img[1] % self.grid[1]:
            raise ValueError(
                f"{cfg.arch}: img_size {cfg.img_size} must equal the model's {img}, "
                f"a multiple of its token grid {self.grid}"
            )
        self.patch = (img[0] // self.grid[0], img[1] // self.grid[1])  # pixels per token
        self.num_prefix = encoder.num_prefix_tokens
        dim, ddim = encoder.embed_dim, cfg.decoder_dim

        # fixed sin-cos positions; the class/register slots (if in the table) stay zero
        with torch.no_grad():
            table = build_sincos2d_pos_embed(list(self.grid), dim)
            encoder.pos_embed[:, -table.shape[0] :] = table
            encoder.pos_embed[:, : encoder.pos_embed.shape[1] - table.shape[0]] = 0
        encoder.pos_embed.requires_grad_(False)

        # encoders whose final norm moved to the pooled feature (fc_norm) get one here
        self.decoder_norm_in = nn.LayerNorm(dim) if isinstance(encoder.norm, nn.Identity) else nn.Identity()
        self.decoder_embed = nn.Linear(dim, ddim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, ddim))
        self.register_buffer(
            "decoder_pos_embed", build_sincos2d_pos_embed(list(self.grid), ddim)[None], persistent=False
        )
        self.decoder_blocks = nn.Sequential(
            *[Block(ddim, cfg.decoder_heads, mlp_ratio=4.0, qkv_bias=True) for _ in range(cfg.decoder_depth)]
        )
        self.decoder_norm = nn.LayerNorm(ddim)
        self.decoder_pred = nn.Linear(ddim, self.patch[0] * self.patch[1] * 3)
        nn.init.normal_(self.mask_token, std=0.02)
        for m in [self.decoder_embed, self.decoder_pred, *self.decoder_blocks.modules()]:
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    @property
    def num_patches(self) -> int:
        return self.grid[0] * self.grid[1]

    def random_keep(self, batch: int, mask_ratio: float) -> torch.Tensor:
        """Indices (B, n_keep) of each sample's visible patches, drawn independently per sample."""
        n_keep = int(self.num_patches * (1 - mask_ratio))
        if n_keep < 1:
            raise ValueError(f"mask_ratio {mask_ratio} leaves no visible patch of {self.num_patches}")
        return torch.rand(batch, self.num_patches).argsort(dim=1)[:, :n_keep]

    def patchify(self, imgs: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, N, ph*pw*3), patches in the encoder's row-major token order."""
        (gh, gw), (ph, pw) = self.grid, self.patch
        x = imgs.reshape(imgs.shape[0], 3, gh, ph, gw, pw)
        return torch.einsum("bchpwq->bhwpqc", x).reshape(imgs.shape[0], gh * gw, ph * pw * 3)

    def encode(self, imgs: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """Encoder on the visible tokens only: (B, prefix + n_keep, D)."""
        enc = self.encoder
        visible = torch.zeros(imgs.shape[0], self.num_patches, dtype=imgs.dtype, device=imgs.device)
        visible.scatter_(1, keep, 1.0)
        pixel_mask = visible.view(-1, 1, *self.grid)
        pixel_mask = pixel_mask.repeat_interleave(self.patch[0], 2).repeat_interleave(self.patch[1], 3)
        x = enc._pos_embed(enc.patch_embed(imgs * pixel_mask))  # positions before dropping tokens
        prefix, tokens = x[:, : self.num_prefix], x[:, self.num_prefix :]
        tokens = tokens.gather(1, keep[..., None].expand(-1, -1, tokens.shape[-1]))
        x = enc.norm_pre(torch.cat([prefix, tokens], dim=1))
        return enc.norm(enc.blocks(x))

    def decode(self, latent: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """Pixel predictions (B, N, ph*pw*3) for every patch, visible or not."""
        x = self.decoder_embed(self.decoder_norm_in(latent))
        prefix, visible = x[:, : self.num_prefix], x[:, self.num_prefix :]
        full = self.mask_token.to(x.dtype).expand(x.shape[0], self.num_patches, -1)
        full = full.scatter(1, keep[..., None].expand(-1, -1, x.shape[-1]), visible)
        x = torch.cat([prefix, full + self.decoder_pos_embed], dim=1)
        x = self.decoder_norm(self.decoder_blocks(x))
        return self.decoder_pred(x[:, self.num_prefix :])

    def forward(self, imgs: torch.Tensor, keep: torch.Tensor | None = None):
        """Loss on the masked patches, the predictions and the mask (B, N; 1 = masked)."""
        if keep is None:
            keep = self.random_keep(imgs.shape[0], self.cfg.mask_ratio)
        pred = self.decode(self.encode(imgs, keep), keep).float()  # the loss in fp32 under autocast
        target = self.patchify(imgs.float())
        if self.cfg.norm_pix_loss:
            target = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6) ** 0.5
        mask = torch.ones(imgs.shape[0], self.num_patches, device=imgs.device)
        mask.scatter_(1, keep, 0.0)
        loss = (((pred - target) ** 2).mean(-1) * mask).sum() / mask.sum()
        return loss, pred, mask

    def keep_from_noise(self, noise: torch.Tensor) -> torch.Tensor:
        """Visible patches (B, n_keep) from per-sample uniform noise (B, N): the lowest draws."""
        n_keep = int(self.num_patches * (1 - self.cfg.mask_ratio))
        if n_keep < 1:
            raise ValueError(f"mask_ratio {self.cfg.mask_ratio} leaves no visible patch of {self.num_patches}")
        return noise.argsort(dim=1)[:, :n_keep]

    def encoder_state_dict(self) -> dict:
        """The encoder's weights in timm's key layout (no classifier head: num_classes=0)."""
        return {k: v.detach().clone() for k, v in self.encoder.state_dict().items()}


def pretrain_transform(cfg: MAEConfig):
    """MAE's augmentation: RandomResizedCrop + flip only."""
    from timm.data import create_transform

    return create_transform(
        input_size=cfg.img_size,
        is_training=True,
        scale=cfg.crop_scale,
        hflip=cfg.hflip,
        color_jitter=None,
        auto_augment=None,
        re_prob=0.0,
        interpolation="bicubic",
        mean=cfg.mean,
        std=cfg.std,
    )


class MaskedImageList(SeededImageList):
    """Pre-training images: (augmented image, its mask noise), both drawn from the sample's seed."""

    def __init__(self, root, samples, transform, num_patches: int):
        super().__init__(root, samples, transform)
        self.num_patches = num_patches

    def __getitem__(self, item):
        img, _ = super().__getitem__(item)
        return img, torch.rand(self.num_patches)  # right after the seeded transform: a function of the seed


def pretrain(
    cfg: MAEConfig,
    data_root,
    train_list,
    unlabelled_lists,
    out_path,
    state_dir=None,
    threads: int | None = None,
    log=print,
) -> dict:
    """Pre-train on the images of ``train_list`` (labels unused) and ``unlabelled_lists``;
    write the encoder to ``out_path`` and the per-epoch curve to ``<out>.history.tsv``.

    Runs as one of several processes when launched by torchrun or srun; only rank 0 writes."""
    out_path = Path(out_path)
    state_dir = Path(state_dir) if state_dir else state_dir_of(out_path)
    lists = [Path(train_list), *map(Path, unlabelled_lists)]
    relpaths = [p for p, _ in read_split_list(train_list)]
    for path in lists[1:]:
        relpaths += read_split_list(path, labelled=False)
    accum = resolve_accumulation(cfg, distributed.detect().world_size, "pretrain config")
    env = distributed.init()
    device = distributed.device_for(env)
    cpus = threads_per_process(threads, env.world_size)
    if cpus:
        torch.set_num_threads(cpus)
    workers = loader_workers(cfg.num_workers, cpus, device)
    if not env.is_main:
        log = lambda msg: None  # noqa: E731 - one voice in the log
    effective_batch = cfg.batch_size * env.world_size * accum
    lr = cfg.base_lr * effective_batch / 1024

    torch.manual_seed(cfg.seed)
    model = MaskedAutoencoder(cfg).to(device)
    from timm.optim import create_optimizer_v2, param_groups_weight_decay

    from webfg.train import build_scheduler, wrap, write_history

    no_decay = {"mask_token", *(f"encoder.{n}" for n in model.encoder.no_weight_decay())}
    optimizer = create_optimizer_v2(
        param_groups_weight_decay(model, cfg.weight_decay, no_decay),
        opt="adamw",
        lr=lr,
        weight_decay=cfg.weight_decay,
        betas=cfg.betas,
    )
    train_set = MaskedImageList(data_root, relpaths, pretrain_transform(cfg), model.num_patches)
    sampler = EpochSampler(
        len(train_set), cfg.batch_size, cfg.seed, env.rank, env.world_size, drop_last=True, global_seeds=True
    )
    if sampler.batches_per_epoch == 0:
        raise InputError(
            f"{', '.join(map(str, lists))}: {len(relpaths)} images is less than one batch of "
            f"{cfg.batch_size} per process x {env.world_size} processes"
        )

    def loss_fn(net, x, noise):
        return net(x, model.keep_from_noise(noise))[0]

    engine = Engine(
        model=model,
        net=wrap(model, env, device),
        optimizer=optimizer,
        scheduler=build_scheduler(
            optimizer,
            cfg.epochs,
            cfg.warmup_epochs,
            lr,
            cfg.warmup_lr_ratio,
            cfg.min_lr,
            -(-sampler.batches_per_epoch // accum),
        ),
        loader=make_loader(train_set, cfg.batch_size, workers, device, sampler),
        sampler=sampler,
        loss_fn=loss_fn,
        device=device,
        amp_dtype=resolve_precision(cfg.precision, device),
        accum=accum,
        env=env,
        seed=cfg.seed,
        state_dir=state_dir,
        fingerprint=fingerprint(cfg, lists, "mae"),
        checkpoint_every=cfg.checkpoint_every,
        log=log,
    )
    engine.resume()

    with engine.stop_signals():
        n_params = sum(p.numel() for p in model.encoder.parameters()) / 1e6
        log(
            f"MAE {cfg.arch}: encoder {n_params:.2f}M params, {model.num_patches} patches of {model.patch} px, "
            f"mask {cfg.mask_ratio}, decoder {cfg.decoder_depth}x{cfg.decoder_dim}; {len(relpaths)} images, "
            f"{env.world_size} process(es) on {device.type} ({env.launcher}), batch {cfg.batch_size} x "
            f"{env.world_size} x accum {accum} = {effective_batch}, lr {lr:.2e}, {engine.updates_per_epoch} "
            f"updates/epoch, threads {torch.get_num_threads()}, loader workers {workers}"
        )
        t_start = time.time()
        for epoch in range(engine.epoch, cfg.epochs):
            engine.train_one_epoch(epoch, desc=f"MAE epoch {epoch + 1}/{cfg.epochs}")
            loss, seen, speed = engine.epoch_totals()
            log(f"epoch {epoch + 1}/{cfg.epochs} loss {loss:.4f} {speed:.0f} img/s")
            engine.end_epoch(
                {
                    "epoch": epoch + 1,
                    "train_loss": loss,
                    "lr": head_lr(optimizer),
                    "images_per_s": speed,
                    "data_wait": round(engine.data_wait(), 4),
                }
            )

        log(f"pre-trained {cfg.epochs} epochs ({time.time() - t_start:.0f}s this run) -> {out_path}")
        if env.is_main:
            write_history(history_of(out_path), engine.history)
            save_torch({k: v.cpu() for k, v in model.encoder_state_dict().items()}, out_path)
            shutil.rmtree(state_dir, ignore_errors=True)
        distributed.barrier()
    return {
        "epochs": cfg.epochs,
        "num_images": len(relpaths),
        "final_loss": engine.history[-1]["train_loss"],
        "world_size": env.world_size,
        "effective_batch": effective_batch,
    }


def load_mae_config(path) -> MAEConfig:
    """A pretrain entry from a YAML file (duplicate keys and syntax errors name the line)."""
    d = read_yaml(path) or {}
    try:
        return MAEConfig.from_dict(d, where=str(path))
    except (ValueError, TypeError) as e:  # unknown key, wrong type, missing arch
        raise InputError(str(e)) from None
