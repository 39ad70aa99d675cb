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
the encoder's ``pos_embed``, which fine-tuning then trains. Resumable like webfg.train:
an atomic state after every epoch in ``state_dir`` (outside the declared output).

    webfg pretrain-mae --config mae.yaml --root data/demo \
        --train-list results/clean/train.txt --unlabelled results/clean/testa.txt --out enc.pth
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

import torch
import torch.nn as nn

from webfg.config import MAEConfig
from webfg.data import ImageList, seed_rngs
from webfg.io import InputError, read_split_list
from webfg.train import fingerprint, load_resumable, save_torch, write_history


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
            raise ValueError(f"{cfg.arch}: img_size {cfg.img_size} must equal the model's {img}, "
                             f"a multiple of its token grid {self.grid}")
        self.patch = (img[0] // self.grid[0], img[1] // self.grid[1])  # pixels per token
        self.num_prefix = encoder.num_prefix_tokens
        dim, ddim = encoder.embed_dim, cfg.decoder_dim

        # fixed sin-cos positions; the class/register slots (if in the table) stay zero
        with torch.no_grad():
            table = build_sincos2d_pos_embed(list(self.grid), dim)
            encoder.pos_embed[:, -table.shape[0]:] = table
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
        prefix, tokens = x[:, : self.num_prefix], x[:, self.num_prefix:]
        tokens = tokens.gather(1, keep[..., None].expand(-1, -1, tokens.shape[-1]))
        x = enc.norm_pre(torch.cat([prefix, tokens], dim=1))
        return enc.norm(enc.blocks(x))

    def decode(self, latent: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """Pixel predictions (B, N, ph*pw*3) for every patch, visible or not."""
        x = self.decoder_embed(self.decoder_norm_in(latent))
        prefix, visible = x[:, : self.num_prefix], x[:, self.num_prefix:]
        full = self.mask_token.expand(x.shape[0], self.num_patches, -1)
        full = full.scatter(1, keep[..., None].expand(-1, -1, x.shape[-1]), visible)
        x = torch.cat([prefix, full + self.decoder_pos_embed], dim=1)
        x = self.decoder_norm(self.decoder_blocks(x))
        return self.decoder_pred(x[:, self.num_prefix:])

    def forward(self, imgs: torch.Tensor, keep: torch.Tensor | None = None):
        """Loss on the masked patches, the predictions and the mask (B, N; 1 = masked)."""
        if keep is None:
            keep = self.random_keep(imgs.shape[0], self.cfg.mask_ratio)
        pred = self.decode(self.encode(imgs, keep), keep)
        target = self.patchify(imgs)
        if self.cfg.norm_pix_loss:
            target = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6) ** 0.5
        mask = torch.ones(imgs.shape[0], self.num_patches, device=imgs.device)
        mask.scatter_(1, keep, 0.0)
        loss = (((pred - target) ** 2).mean(-1) * mask).sum() / mask.sum()
        return loss, pred, mask

    def encoder_state_dict(self) -> dict:
        """The encoder's weights in timm's key layout (no classifier head: num_classes=0)."""
        return {k: v.detach().clone() for k, v in self.encoder.state_dict().items()}


def pretrain_transform(cfg: MAEConfig):
    """MAE's augmentation: RandomResizedCrop + flip only."""
    from timm.data import create_transform

    return create_transform(
        input_size=cfg.img_size, is_training=True, scale=cfg.crop_scale, hflip=cfg.hflip,
        color_jitter=None, auto_augment=None, re_prob=0.0, interpolation="bicubic",
        mean=cfg.mean, std=cfg.std,
    )


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
    write the encoder to ``out_path`` and the per-epoch curve to ``<out>.history.tsv``."""
    if threads:
        torch.set_num_threads(threads)
    out_path = Path(out_path)
    state_dir = Path(state_dir) if state_dir else out_path.with_suffix(".state")
    lists = [Path(train_list), *map(Path, unlabelled_lists)]
    relpaths = [p for p, _ in read_split_list(train_list)]
    for path in lists[1:]:
        relpaths += read_split_list(path, labelled=False)
    steps_per_epoch = len(relpaths) // cfg.batch_size
    if steps_per_epoch == 0:
        raise InputError(f"{', '.join(map(str, lists))}: {len(relpaths)} images is less than one batch of {cfg.batch_size}")
    world_lr = cfg.base_lr * cfg.batch_size / 1024

    torch.manual_seed(cfg.seed)
    model = MaskedAutoencoder(cfg)
    from timm.optim import create_optimizer_v2, param_groups_weight_decay
    from timm.scheduler import create_scheduler_v2

    no_decay = {"mask_token", *(f"encoder.{n}" for n in model.encoder.no_weight_decay())}
    optimizer = create_optimizer_v2(
        param_groups_weight_decay(model, cfg.weight_decay, no_decay),
        opt="adamw", lr=world_lr, weight_decay=cfg.weight_decay, betas=cfg.betas,
    )
    scheduler, _ = create_scheduler_v2(
        optimizer, sched="cosine", num_epochs=cfg.epochs, warmup_epochs=cfg.warmup_epochs,
        warmup_lr=world_lr * cfg.warmup_lr_ratio, min_lr=cfg.min_lr,
        step_on_epochs=False, updates_per_epoch=steps_per_epoch,
    )
    train_set = ImageList(data_root, relpaths, pretrain_transform(cfg))

    # ---- resume (the same image lists and config only)
    # webfg.train's fingerprint per list (config + list bytes; the list's position in place of C)
    fp = hashlib.sha256("".join(fingerprint(cfg, p, i) for i, p in enumerate(lists)).encode()).hexdigest()
    start_epoch, history = 0, []
    last = state_dir / "last.pt"
    state = load_resumable(state_dir, fp, log)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch, history = state["epoch"] + 1, json.loads(state["history"])
        log(f"resumed from {last} after epoch {start_epoch}")
    state_dir.mkdir(parents=True, exist_ok=True)

    n_params = sum(p.numel() for p in model.encoder.parameters()) / 1e6
    log(f"MAE {cfg.arch}: encoder {n_params:.2f}M params, {model.num_patches} patches of {model.patch} px, "
        f"mask {cfg.mask_ratio}, decoder {cfg.decoder_depth}x{cfg.decoder_dim}; {len(relpaths)} images, "
        f"lr {world_lr:.2e}, {steps_per_epoch} steps/epoch, threads {torch.get_num_threads()}")
    t_start = time.time()
    for epoch in range(start_epoch, cfg.epochs):
        # per-epoch seeds: a resumed run draws the same batches, crops and masks
        epoch_seed = cfg.seed * 100_003 + epoch
        seed_rngs(epoch_seed)
        loader = torch.utils.data.DataLoader(
            train_set, batch_size=cfg.batch_size, shuffle=True, drop_last=True,
            generator=torch.Generator().manual_seed(epoch_seed),
        )
        model.train()
        t0, loss_sum, seen = time.time(), 0.0, 0
        for step, (x, _) in enumerate(loader):
            scheduler.step_update(epoch * steps_per_epoch + step)
            loss, _, _ = model(x)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.item() * len(x)
            seen += len(x)
        train_s = time.time() - t0
        history.append({"epoch": epoch + 1, "train_loss": loss_sum / seen,
                        "lr": optimizer.param_groups[0]["lr"], "images_per_s": seen / train_s})
        log(f"epoch {epoch + 1}/{cfg.epochs} loss {loss_sum / seen:.4f} {seen / train_s:.0f} img/s")
        save_torch({"fingerprint": fp, "epoch": epoch, "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(), "history": json.dumps(history)}, last)

    log(f"pre-trained {cfg.epochs} epochs ({time.time() - t_start:.0f}s this run) -> {out_path}")
    write_history(out_path.with_suffix(".history.tsv"), history)
    save_torch(model.encoder_state_dict(), out_path)
    shutil.rmtree(state_dir, ignore_errors=True)
    return {"epochs": cfg.epochs, "num_images": len(relpaths), "final_loss": history[-1]["train_loss"]}


def load_mae_config(path) -> MAEConfig:
    import yaml

    with open(path, encoding="utf-8") as f:
        d = yaml.safe_load(f) or {}
    try:
        return MAEConfig.from_dict(d, where=str(path))
    except (ValueError, TypeError) as e:  # unknown key, wrong type, missing arch
        raise InputError(str(e)) from None
