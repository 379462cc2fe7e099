"""Command-line options shared by several ``pointrend`` commands."""

from __future__ import annotations

import argparse
import sys


def add_set_option(p: argparse.ArgumentParser, example: str) -> None:
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"override a config value, e.g. --set {example}",
    )


def add_overwrite_option(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--overwrite", action="store_true", help=f"replace {what} (default: an error)")


def add_device_options(p: argparse.ArgumentParser, amp: bool = True) -> None:
    p.add_argument(
        "--device",
        help="auto, cpu, cuda or cuda:N (default: the config's device, auto: CUDA when available)",
    )
    if amp:
        p.add_argument(
            "--amp",
            default="off",
            help="mixed precision: fp16, bf16 or off (default off; fp16 suits GPUs, bf16 the CPU)",
        )


def device_and_amp(args, device):
    """``(device, autocast dtype or None)`` of a loaded model's device and ``--amp``; joins the
    process group under ``torchrun``."""
    from .engine.distributed import DeviceError, init_distributed, resolve_amp

    try:
        device = init_distributed(device)
        amp = resolve_amp(getattr(args, "amp", None), device)
    except DeviceError as err:
        raise ValueError(str(err)) from err
    return device, amp


def autocast(device, amp):
    import torch

    return torch.autocast(device.type, dtype=amp, enabled=amp is not None)


def say_where(args, device, amp) -> None:
    from .engine.distributed import describe_run, is_main_process

    if is_main_process():
        print(f"pointrend {args.command}: {describe_run(device, amp)}", file=sys.stderr)
