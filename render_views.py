"""Render 3D face meshes from several viewpoints into contact-sheet PNGs.

    python render_views.py                        # built-in demo: synthetic faces, 7 expressions
    python render_views.py face.wrl               # one mesh -> out/views/face.wrl.png
    python render_views.py data/synth/bu3dfe      # a folder or dataset root, searched recursively
    python render_views.py face.wrl --views="-40,0;0,0;40,0;0,20" --size 160 --mode normals
    python render_views.py F001/Happy --sequence --every 3 --views=0,0  # a 4D sequence's frames

Each sheet shows the views of one mesh side by side (left to right in --views order, labelled
with their yaw); with --sequence, the frames of one sequence (a folder of meshes, in natural
order) side by side, one row per view. Files that cannot be read are reported with the reason
and skipped; the exit code is non-zero only if nothing could be rendered.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import facet  # noqa: F401 -- first: sets OpenMP's passive wait before torch loads

import torch
from tqdm import tqdm

from facet import runtime
from facet.camera import format_views, parse_views, view_name
from facet.data.layouts import natural_key
from facet.data.meshio import MESH_SUFFIXES, load_mesh
from facet.render import MODES, PICTURE_RENDER, RenderSettings, render_views, save_contact_sheet

DEMO_EXPRESSIONS = ("neutral", "anger", "disgust", "fear", "happiness", "sadness", "surprise")


def find_meshes(root: Path) -> list[Path]:
    """The mesh files under `root` (itself if it is a file), sorted."""
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such file or folder")
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in MESH_SUFFIXES and p.is_file())


def render_files(root: Path, out: Path, args: argparse.Namespace) -> tuple[int, list[str]]:
    """Render every mesh under `root` to out/<relative path>.png (the extension kept, so that
    face.obj and face.ply get a sheet each); return (count, failures)."""
    paths = find_meshes(root)
    rendered, failures = 0, []
    for path in tqdm(paths, desc="rendering", unit="mesh", disable=not sys.stderr.isatty()):
        relative = path.relative_to(root) if root.is_dir() else Path(path.name)
        try:
            views = render_views(load_mesh(path), args.views, image_size=args.size,
                                 mode=args.mode)  # (V, 3, H, W)
        except (OSError, ValueError) as err:
            failures.append(f"{path}: {err}")
            continue
        save_contact_sheet(views[None], out / relative.with_name(relative.name + ".png"),
                           labels=[path.name], column_labels=view_names(args.views))
        rendered += 1
    if not paths:
        failures.append(f"{root}: no mesh files ({', '.join(MESH_SUFFIXES)})")
    return rendered, failures


def view_names(views) -> list[str]:
    return [view_name(yaw, pitch) for yaw, pitch in views]


def render_sequence(folder: Path, out: Path, args: argparse.Namespace) -> Path:
    """Render every `args.every`-th frame of the sequence in `folder` into one sheet,
    out/<folder name>.png: a column per frame (labelled with its file name), a row per view."""
    frames = sorted((p for p in folder.iterdir() if p.is_file()
                     and p.suffix.lower() in MESH_SUFFIXES), key=lambda p: natural_key(p.name))
    if not frames:
        raise FileNotFoundError(f"{folder}: no frames ({', '.join(MESH_SUFFIXES)}) in it")
    picked = frames[::args.every]
    views = [render_views(load_mesh(path), args.views, image_size=args.size, mode=args.mode)
             for path in tqdm(picked, desc="frames", disable=not sys.stderr.isatty())]
    grid = torch.stack(views, dim=1)  # (V, T', 3, H, W): a row per view, a column per frame
    return save_contact_sheet(grid, out / f"{folder.name}.png", labels=view_names(args.views),
                              column_labels=[f"frame {p.stem}" for p in picked])


def render_demo(out: Path, args: argparse.Namespace) -> Path:
    """Render the synthetic demo face with each expression into one sheet (one row each)."""
    from facet.faces.scanner import demo_face

    rows = [render_views(demo_face(name, intensity=0 if name == "neutral" else 4, seed=0),
                         args.views, image_size=args.size, mode=args.mode)
            for name in tqdm(DEMO_EXPRESSIONS, desc="demo", disable=not sys.stderr.isatty())]
    return save_contact_sheet(rows, out / f"demo_{args.mode}.png", labels=list(DEMO_EXPRESSIONS),
                              column_labels=view_names(args.views))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input", nargs="?", type=Path,
                        help="mesh file, folder or dataset root (default: the built-in demo)")
    parser.add_argument("--out", type=Path, default=Path("out/views"), help="output folder")
    default_views = format_views(PICTURE_RENDER.views)
    parser.add_argument("--views", type=parse_views, default=PICTURE_RENDER.views,
                        help="'yaw,pitch;...' in degrees; write --views=-20,0;... when it starts "
                             f"with a minus (default: {default_views})")
    parser.add_argument("--size", type=int, default=PICTURE_RENDER.image_size,
                        help="image size in pixels (default: %(default)s)")
    parser.add_argument("--mode", choices=MODES, default=PICTURE_RENDER.mode,
                        help="shading mode (default: %(default)s)")
    parser.add_argument("--cache", action="store_true",
                        help="INPUT is a dataset root: fill the view cache used by training "
                             "(give the training run's --views/--size/--mode) instead of PNGs")
    parser.add_argument("--sequence", action="store_true",
                        help="INPUT is a folder holding the frames of one 4D sequence: one sheet "
                             "of its frames side by side, a row per view")
    parser.add_argument("--every", type=int, default=1,
                        help="with --sequence, every N-th frame (default: every frame)")
    args = parser.parse_args(argv)
    # glibc reuses freed blocks instead of unmapping them, so the rasterizer's temporaries do
    # not fault in fresh pages on every view (facet/runtime.py's docstring)
    runtime.keep_freed_memory()
    if args.size < 1:
        parser.error(f"--size must be positive, got {args.size}")
    if args.every < 1:
        parser.error(f"--every must be positive, got {args.every}")
    if args.sequence:
        if args.input is None or not args.input.is_dir():
            parser.error("--sequence needs a folder of frames as INPUT")
        try:
            print(f"wrote {render_sequence(args.input, args.out, args)}")
        except (OSError, ValueError) as err:  # no frames, an unreadable frame
            print(f"error: {err}", file=sys.stderr)
            return 1
        return 0

    if args.cache:
        if args.input is None:
            parser.error("--cache needs a dataset root as INPUT")
        from facet.data.view_cache import fill_cache_cli

        try:
            report, text = fill_cache_cli(args.input, settings=RenderSettings(args.views, args.size,
                                                                              args.mode))
        except (OSError, ValueError) as err:  # no root, unknown layout, read-only cache
            print(f"error: {err}", file=sys.stderr)
            return 1
        print(text)
        return 1 if report.failed and not (report.rendered or report.reused) else 0

    if args.input is None:
        print(f"wrote {render_demo(args.out, args)}")
        return 0
    try:
        rendered, failures = render_files(args.input, args.out, args)
    except OSError as err:  # no such input, a folder --out cannot write to
        print(f"error: {err}", file=sys.stderr)
        return 1
    for failure in failures:
        print(f"skipped {failure}", file=sys.stderr)
    print(f"rendered {rendered} mesh(es) into {args.out}" +
          (f", {len(failures)} skipped" if failures else ""))
    return 0 if rendered else 1


if __name__ == "__main__":
    sys.exit(main())
