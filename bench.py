"""facet benchmarks: each section prints a table whose ratios are measured in the same run.

    python bench.py                 # every section
    python bench.py --only raster   # one section (names: see SECTIONS)

Figures are hardware-dependent; the README quotes the ones measured on the reference machine
(2 CPU cores). Benchmarks are not tests: nothing here asserts a speed.
"""
from __future__ import annotations

import argparse
import os
import time


def timed(fn, repeat: int = 3, warmup: int = 1, clock=time.perf_counter) -> float:
    """Best seconds of `repeat` calls of fn() after `warmup` calls.

    clock: time.perf_counter (wall time) or time.process_time (CPU time of all this process's
    threads, which barely changes when other processes compete for the cores).
    """
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(repeat):
        start = clock()
        fn()
        best = min(best, clock() - start)
    return best


def print_table(title: str, header: list[str], rows: list[list]) -> None:
    """Print a plain-text table with right-aligned columns."""
    cells = [header] + [[f"{c:.3g}" if isinstance(c, float) else str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    print(f"\n## {title}")
    for j, row in enumerate(cells):
        print("  ".join(c.rjust(w) for c, w in zip(row, widths)))
        if j == 0:
            print("  ".join("-" * w for w in widths))


def cpu_model() -> str:
    """The processor's name as the kernel reports it (lscpu's "Model name")."""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "unknown"


def torch_version() -> str:
    import torch

    return torch.__version__


# --- sections (one function each; register below) ---


def bench_mesh(args) -> None:
    """load_mesh on a BU-4DFE-sized frame (~35k vertices, ~70k triangles, per-corner uv)."""
    import tempfile
    from pathlib import Path

    import numpy as np
    from PIL import Image

    from facet.data.meshio import save_bnt
    from facet.data.meshio import save_bnd
    from facet.data.meshio import load_mesh
    from facet.mesh import Mesh
    from facet.data.meshio import save_wrl

    n = 187  # 187 x 187 grid: 34,969 vertices, 69,192 triangles, like a BU-4DFE frame
    rows, cols = np.mgrid[0:n, 0:n] / (n - 1)  # (n, n) each, in [0, 1]
    x, y = (cols - 0.5) * 140, (0.5 - rows) * 180  # mm, row 0 at the top
    z = 60 * np.exp(-(x**2 + y**2) / 3000)  # a nose-like bump
    idx = np.arange(n * n).reshape(n, n)
    a, b, c, d = idx[:-1, :-1], idx[:-1, 1:], idx[1:, :-1], idx[1:, 1:]
    faces = np.concatenate([np.stack([a, c, b], -1), np.stack([b, c, d], -1)]).reshape(-1, 3)
    verts = np.stack([x, y, z], -1).reshape(-1, 3)  # (N, 3)
    uv = np.stack([cols, 1 - rows], -1).reshape(-1, 2)[faces]  # (F, 3, 2) per corner
    rng = np.random.default_rng(0)
    repeat = 2 if args.quick else 5
    rows_out = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        save_wrl(Mesh(verts=verts, faces=faces, uv=uv), folder / "000.wrl", texture_url="000.jpg")
        texture = rng.integers(0, 256, (512, 512, 3), dtype=np.uint8)  # (H, W, 3)
        Image.fromarray(texture).save(folder / "000.jpg")
        save_bnd(np.arange(83) * 400, verts[np.arange(83) * 400], folder / "000.bnd")
        save_bnt(folder / "bs000_N_N_0.bnt", x, y, z, cols, 1 - rows, -1e9, "bs000_N_N_0.png")
        for name, what in (("000.wrl", ".wrl + .jpg texture + .bnd, per-corner uv"),
                           ("bs000_N_N_0.bnt", ".bnt range grid, per-vertex uv")):
            path = folder / name
            mesh = load_mesh(path)
            seconds = timed(lambda: load_mesh(path), repeat=repeat)
            rows_out.append([what, mesh.num_verts, mesh.num_faces,
                             f"{path.stat().st_size / 1e6:.1f}", f"{seconds:.3f}", "< 0.3"])
    print_table(f"mesh: load_mesh per file (best of {repeat})",
                ["file", "verts", "triangles", "MB", "s/file", "target s"], rows_out)


def bench_cache(args) -> None:
    """View cache fill: seconds per scan (load + render 3 views at 112 px), 1 vs 2 processes."""
    import tempfile
    from pathlib import Path

    from facet.data.layouts import index_dataset
    from facet.faces.synth import write_bu3dfe
    from facet.render import RenderSettings
    from facet.data.view_cache import ViewCache

    subjects = 1 if args.quick else 2  # 25 scans each, BU-3DFE-like
    with tempfile.TemporaryDirectory() as tmp:
        samples = index_dataset(write_bu3dfe(Path(tmp) / "bu3dfe", subjects=subjects)).samples
        rows, base = [], None
        for workers in (1, 2):
            cache = ViewCache(Path(tmp) / f"cache{workers}", RenderSettings(image_size=112))
            start = time.perf_counter()
            report = cache.fill(samples, workers=workers, progress=False)
            seconds = time.perf_counter() - start
            base = base or seconds
            rows.append([workers, report.rendered, seconds, seconds / len(samples), base / seconds])
            reuse = time.perf_counter()
            # all entries valid: CRC checks only
            cache.fill(samples, workers=workers, progress=False)
            rows[-1].append((time.perf_counter() - reuse) / len(samples) * 1e3)
    print_table("view cache fill (synthetic BU-3DFE scans, 3 views, 112 px, shaded)",
                ["workers", "scans", "seconds", "s/scan", "speed-up", "reuse ms/scan"], rows)


def bench_clip(args) -> None:
    """CLIP image tower: images/s forward and forward+backward, GFLOP/s and MFU.

    Matmul FLOPs per image (2 per multiply-add), N = (S/P)^2 + 1 tokens of width C, L blocks:
    L * (24 N C^2 [qkv 6NC^2 + out 2NC^2 + MLP 16NC^2] + 4 N^2 C [QK^T and AV])
    + 2 p^2 C_in C (N - 1) [conv1: p = P / 2^k on C_in channels] + 2 C E [proj]
    + sum over the k stem convolutions of 2 * 9 C_i-1 C_i (S / 2^i)^2; forward+backward = 3x
    forward.
    MFU = achieved / the fp32 matmul rate of a large square matmul measured in the same run
    (best of before and after the models, so that a busy machine does not inflate MFU).
    """
    import torch

    from facet.clip import CLIP, PRESETS

    n = 1024 if args.quick else 2048
    a, b = torch.randn(n, n), torch.randn(n, n)

    def matmul_peak() -> float:
        return 2 * n**3 / timed(lambda: a @ b, repeat=3 if args.quick else 5) / 1e9

    peak_before, measured = matmul_peak(), []
    small, large = (8, 1) if args.quick else (32, 4)
    for preset, batch in (("tiny", small), ("tiny-stem", small), ("vit-b-16", large)):
        c = PRESETS[preset]
        tokens = (c.image_size // c.patch_size) ** 2 + 1
        width = c.vision_width
        visual = CLIP(c).visual
        stem = sum(2 * conv.weight[0].numel() * conv.out_channels * (c.image_size >> (i + 1)) ** 2
                   for i, conv in enumerate(visual.stem))
        gflop = (c.vision_layers * (24 * tokens * width**2 + 4 * tokens**2 * width)
                 + 2 * visual.conv1.weight[0].numel() * width * (tokens - 1)
                 + 2 * width * c.embed_dim + stem) / 1e9
        images = torch.randn(batch, 3, c.image_size, c.image_size)

        def forward():
            with torch.no_grad():
                visual(images)

        def forward_backward():
            visual.zero_grad(set_to_none=True)
            visual(images).square().mean().backward()

        repeat = 1 if preset == "vit-b-16" and args.quick else 2
        for mode, fn, factor in (("fwd", forward, 1), ("fwd+bwd", forward_backward, 3)):
            rate = batch / timed(fn, repeat=repeat)
            measured.append([preset, c.image_size, batch, mode, rate, gflop * factor,
                             rate * gflop * factor])
    peak = max(peak_before, matmul_peak())
    rows = [row + [f"{100 * row[-1] / peak:.0f}%"] for row in measured]
    print_table(f"CLIP image tower on {torch.get_num_threads()} threads; fp32 matmul peak "
                f"{peak:.1f} GFLOP/s ({n}^2 matmul)",
                ["model", "size", "batch", "pass", "img/s", "GFLOP/img", "GFLOP/s", "MFU"], rows)


def bench_train(args) -> None:
    """Seconds per epoch of the default run config (preset "cpu") on a small synthetic set.

    Trains 2 epochs on a fresh set (rendering excluded), times the second (warm) epoch, and
    extrapolates to the default set: 60 subjects x 6 emotions x 2 intensities, 9/10 for training.
    Peak memory: the process's max RSS (includes data generation and rendering), and the CUDA
    allocator's peak when a GPU is used.
    """
    import json
    import resource
    import tempfile
    from pathlib import Path

    import torch

    import train
    from facet.faces import synth
    from facet.config import PRESETS

    subjects = 2 if args.quick else 4
    default = PRESETS["cpu"]
    with tempfile.TemporaryDirectory() as tmp:
        root = synth.write_bu3dfe(Path(tmp) / "bu3dfe", subjects=subjects, seed=0)
        train.main([f"--data={root}", f"--cache={tmp}/cache", f"--out={tmp}/out", "--name=b",
                    "--folds=2", "--epochs=2", "--eval_every=100"])
        log = [json.loads(line) for line in Path(f"{tmp}/out/b/log.jsonl").read_text().splitlines()]
    warm = [r for r in log if "epoch_s" in r][-1]
    per_sample = warm["epoch_s"] / warm["train_samples"]
    full = 60 * 6 * 2 * 9 // 10  # training scans of one fold of the default set
    rows = [["train samples / epoch", warm["train_samples"]],
            ["s / epoch (warm)", warm["epoch_s"]],
            ["samples / s", 1 / per_sample],
            [f"est. s / epoch, default set ({full} samples)", per_sample * full],
            [f"est. min, default run ({default.epochs} epochs)",
             per_sample * full * default.epochs / 60],
            ["peak RSS MiB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024]]
    if torch.cuda.is_available():
        rows.append(["peak CUDA MiB", torch.cuda.max_memory_allocated() / 2**20])
    print_table(f"train: default config (model {default.model}, {default.image_size} px, "
                f"batch {default.batch_size}, {torch.get_num_threads()} threads)",
                ["quantity", "value"], rows)


def _dome_face(n: int):
    """A face-sized bumpy dome on an n x n grid: 2 (n-1)^2 triangles (a stand-in scan)."""
    import numpy as np

    from facet.mesh import Mesh

    u = np.linspace(-0.5, 0.5, n, dtype=np.float32)
    x, y = np.meshgrid(u, u)
    bumps = 0.02 * np.sin(20 * x) * np.cos(17 * y)
    z = 0.4 * np.sqrt(np.clip(0.5 - x ** 2 - y ** 2, 0, None)) + bumps
    a = (np.arange(n - 1)[:, None] * n + np.arange(n - 1)).reshape(-1)  # each cell's first corner
    faces = np.concatenate([np.stack([a, a + 1, a + n + 1], 1),
                            np.stack([a, a + n + 1, a + n], 1)])
    return Mesh(np.stack([x, y, z], -1).reshape(-1, 3), faces)


def _llvmpipe_context(threads: int):
    """A standalone OpenGL context on Mesa's llvmpipe (moderngl + EGL) drawing with `threads`
    rasterizer threads, or (None, why not). moderngl is optional (pip install moderngl; Mesa's
    EGL from the system, e.g. libegl-mesa0 libegl1 libgl1-mesa-dri libgbm1 on Debian)."""
    # Mesa reads these when it creates its first context: software rendering on llvmpipe, with
    # as many threads as torch gets, so that the ratio compares equal resources. One thread is
    # LP_NUM_THREADS=0, drawing in the calling thread as facet does: with 1, llvmpipe hands the
    # work to a worker thread and ran up to 1.6x slower at times (where the scheduler put it).
    os.environ.update(LP_NUM_THREADS=str(threads if threads > 1 else 0), GALLIUM_DRIVER="llvmpipe",
                      LIBGL_ALWAYS_SOFTWARE="1")
    try:
        import moderngl
    except ImportError:
        return None, "moderngl not installed"
    try:
        ctx = moderngl.create_standalone_context(backend="egl")
    except Exception as err:  # no EGL or Mesa on this machine
        return None, f"no EGL context ({type(err).__name__}: {err})"
    renderer = ctx.info.get("GL_RENDERER", "?")
    if "llvmpipe" not in renderer:
        ctx.release()
        return None, f"EGL gave {renderer!r}, not llvmpipe"
    return ctx, renderer


def _llvmpipe_renderer(ctx, mesh, views, size: int):
    """A function that draws `mesh` like render_views(mode="shaded", normalize=False) with
    llvmpipe and reads the pixels back: (V, H, W) grey float32 images, row 0 at the top."""
    import moderngl
    import numpy as np
    import torch

    from facet.camera import view_cameras
    from facet.render import ALBEDO, AMBIENT, SHININESS, SPECULAR, vertex_normals

    normals = vertex_normals(torch.from_numpy(mesh.verts), torch.from_numpy(mesh.faces)).numpy()
    # facet's shading per pixel: the interpolated normal normalised, two-sided headlight.
    program = ctx.program(vertex_shader="""#version 330
        uniform mat4 mvp; uniform mat3 rot; in vec3 pos; in vec3 nrm; out vec3 normal;
        void main() { gl_Position = mvp * vec4(pos, 1.0); normal = rot * nrm; }""",
                          fragment_shader=f"""#version 330
        in vec3 normal; out vec4 color;
        void main() {{ float facing = abs(normalize(normal).z);
            float grey = {ALBEDO} * ({AMBIENT} + {1 - AMBIENT} * facing)
                         + {SPECULAR} * pow(facing, {float(SHININESS)});
            color = vec4(vec3(grey), 1.0); }}""")
    vbo = ctx.buffer(np.concatenate([mesh.verts, normals], 1).astype("f4").tobytes())
    ibo = ctx.buffer(mesh.faces.astype("i4").tobytes())
    vao = ctx.vertex_array(program, [(vbo, "3f 3f", "pos", "nrm")], ibo)
    fbo = ctx.framebuffer(color_attachments=[ctx.renderbuffer((size, size))],
                          depth_attachment=ctx.depth_renderbuffer((size, size)))
    cameras = view_cameras(views)
    mvps = (cameras.projection @ cameras.view).numpy()
    rots = cameras.view[:, :3, :3].numpy()

    def render() -> list:
        fbo.use()
        ctx.enable(moderngl.DEPTH_TEST)
        images = []
        for mvp, rot in zip(mvps, rots):
            fbo.clear(1.0, 1.0, 1.0, 1.0, depth=1.0)
            program["mvp"].write(mvp.T.astype("f4").tobytes())  # GL matrices are column-major
            program["rot"].write(rot.T.astype("f4").tobytes())
            vao.render(moderngl.TRIANGLES)
            images.append(fbo.read(components=3))  # include the read-back: facet returns pixels
        return images

    def pixels() -> np.ndarray:
        """(V, H, W) grey in [0, 1]; GL's row 0 is the bottom, so flipped."""
        return np.stack([np.frombuffer(image, np.uint8).reshape(size, size, 3)[::-1, :, 0]
                         for image in render()]).astype(np.float32) / 255

    return render, pixels


def bench_raster(args) -> None:
    """render_views (9 views, shaded) vs Mesa llvmpipe: 5k/30k/70k-face domes and real faces
    (ICT-FaceKit: the demo face, 9k triangles, and the whole face area, 13k), 112/224 px, in
    views per CPU-second.

    Both draw the same, already normalised mesh (render_views(normalize=False)) from the same
    cameras, with smooth normals normalised per pixel and headlight shading, and return pixels;
    llvmpipe gets as many threads (LP_NUM_THREADS) as torch ($BENCH_THREADS, default 1).
    The CPU may be shared with other work, so the calls are interleaved -- each round times a
    case once with facet and once with llvmpipe -- and the table shows medians over the
    rounds of CPU time (time.process_time: all of this process's threads, llvmpipe's included),
    which other processes inflate far less than wall time.
    """
    import numpy as np
    import torch

    from facet.faces.expressions import expression_aus
    from facet.faces.face_model import sample_subject
    from facet.faces.scanner import demo_face, face_mesh
    from facet.mesh import normalize
    from facet.render import render_views

    # One thread by default: facet renders on one thread per worker process (the view cache),
    # as torch's second thread slows eager rasterization down (measured: 153 views/s on 2
    # threads against 250 on one, ICT face, 224 px, AMD EPYC), and llvmpipe gained nothing.
    threads = int(os.environ.get("BENCH_THREADS", "1"))
    torch.set_num_threads(threads)
    ctx, renderer = _llvmpipe_context(threads)
    views = [(yaw, pitch) for yaw in (-30, 0, 30) for pitch in (-15, 0, 15)]
    _bench_allocator(views)
    whole_face = face_mesh(sample_subject(np.random.default_rng(0)),
                           expression_aus("happiness", 4))  # ICT's whole face area, uncropped
    meshes = [("dome", normalize(_dome_face(52))[0]),  # 5k faces
              ("ICT face", normalize(demo_face())[0]),  # a real face: ICT-FaceKit, 9k triangles
              ("ICT face area", normalize(whole_face)[0]),  # 13k
              ("dome", normalize(_dome_face(123))[0]),  # 30k
              ("dome", normalize(_dome_face(188))[0])]  # 70k
    sizes = (112,) if args.quick else (112, 224)
    cases = []
    for name, mesh in meshes:
        for size in sizes:
            def facet(mesh=mesh, size=size) -> torch.Tensor:
                return render_views(mesh, views, image_size=size, normalize=False)

            gl, gl_pixels = _llvmpipe_renderer(ctx, mesh, views, size) if ctx else (None, None)
            agree = float("nan")
            if gl is not None:  # the same picture: mean grey difference over all pixels
                agree = float(np.abs(facet()[:, 0].numpy() - gl_pixels()).mean())
            cases.append(dict(label=f"{name} {mesh.num_faces}", size=size, facet=facet, gl=gl,
                              agree=agree, facet_cpu=[], facet_wall=[], gl_cpu=[], gl_wall=[]))
    rounds = 3 if args.quick else 7
    # Case by case, the two renderers alternating within it.
    for case in cases:
        for _ in range(1 + rounds):  # the first round warms up and is not counted
            for side in ("facet", "gl"):
                if case[side] is None:
                    continue
                wall, cpu = time.perf_counter(), time.process_time()
                case[side]()
                case[f"{side}_cpu"].append(time.process_time() - cpu)
                case[f"{side}_wall"].append(time.perf_counter() - wall)
    def per_second(seconds: list) -> float:
        return 9 / float(np.median(seconds[1:]))  # views per second, warm-up round left out

    rows = []
    for case in cases:
        facet = [case["label"], case["size"], per_second(case["facet_cpu"])]
        if case["gl"] is None:
            rows.append(facet + ["skipped", "-", per_second(case["facet_wall"]), "-", "-"])
            continue
        gl_cpu = per_second(case["gl_cpu"])
        rows.append(facet + [gl_cpu, facet[2] / gl_cpu, per_second(case["facet_wall"]),
                             per_second(case["gl_wall"]), case["agree"]])
    print_table(f"raster: render_views vs llvmpipe, 9 views, shaded, {threads} thread(s) each "
                f"({renderer if ctx else 'llvmpipe skipped: ' + renderer}); medians of "
                f"{rounds} interleaved rounds",
                ["mesh", "px", "facet views/CPU-s", "llvmpipe views/CPU-s", "facet/llvmpipe",
                 "facet views/s", "llvmpipe views/s", "mean |diff|"], rows)
    if ctx is None:
        print(f"  llvmpipe: skipped: {renderer}")
    print("  views/CPU-s: views per second of this process's CPU time (all its threads); "
          "facet/llvmpipe is their ratio (> 1: facet faster). views/s: wall time. mean |diff|: "
          "mean grey difference of the two pictures (edge pixels and 8-bit rounding)")
    if not args.quick:
        _bench_compiled(views)
    load, cores = os.getloadavg()[0], os.cpu_count() or 1
    if load > cores / 2:
        print(f"  note: load average {load:.1f} on {cores} cores -- other processes share the CPU; "
              "both renderers were interleaved, but wall times and cache contention suffer")


def _bench_allocator(views) -> None:
    """render_views at 30k faces / 224 px with glibc's default malloc, then with
    facet.runtime.keep_freed_memory (which stays on for the rest of the run)."""
    import resource

    from facet.runtime import keep_freed_memory
    from facet.mesh import normalize
    from facet.render import render_views

    mesh, _ = normalize(_dome_face(123))

    def measure() -> list:
        def call():
            render_views(mesh, views, image_size=224, normalize=False)

        seconds = timed(call, repeat=5)
        before = resource.getrusage(resource.RUSAGE_SELF)
        call()
        after = resource.getrusage(resource.RUSAGE_SELF)
        return [9 / seconds, 1000 * seconds / 9, after.ru_minflt - before.ru_minflt,
                1000 * (after.ru_stime - before.ru_stime)]

    rows = [["glibc default"] + measure()]
    if keep_freed_memory():
        rows.append(["keep_freed_memory()"] + measure())
    print_table("raster: allocator policy, render_views 30k faces, 224 px, 9 views",
                ["malloc", "views/s", "ms/view", "page faults/call", "kernel ms/call"], rows)


def _bench_compiled(views) -> None:
    """render_views (30k faces, 224 px) with facet.raster's per-triangle setup and its
    per-chunk candidate test compiled by torch.compile (dynamic shapes), one at a time; compile
    time excluded. Whole-function compilation of `rasterize` took minutes and ran slower."""
    import warnings

    import torch

    from facet import raster, render
    from facet.mesh import normalize

    mesh, _ = normalize(_dome_face(123))

    def call():
        render.render_views(mesh, views, image_size=224, normalize=False)

    # Dynamo notes that it traces through the cached helpers (the grids): harmless here.
    warnings.filterwarnings("ignore", message=".*functools.lru_cache")
    rows = [["eager", 9 / timed(call, repeat=5), "-"]]
    for step in ("_setup_triangles", "_scatter_bucket"):
        eager_step = getattr(raster, step)
        try:
            setattr(raster, step, torch.compile(eager_step, dynamic=True))
            start = time.perf_counter()
            call()
            build = f"{time.perf_counter() - start:.0f} s"
            rows.append([f"{step} compiled", 9 / timed(call, repeat=5), build])
        except Exception as err:  # inductor needs a C++ compiler; report instead of failing
            rows.append([f"{step} compiled", float("nan"), f"failed: {type(err).__name__}"])
        finally:
            setattr(raster, step, eager_step)
    print_table("raster: torch.compile of one step of rasterize, render_views 30k faces, 224 px",
                ["variant", "views/s", "compile"], rows)


# A child process: views/s of render_views (demo face, 9 views, 224 px, 2 threads) over SECONDS.
_RENDER_CHILD = """
import sys, time
import torch
from facet.faces.scanner import demo_face
from facet.mesh import normalize
from facet.render import render_views
torch.set_num_threads(2)
mesh, views = normalize(demo_face())[0], [(y, p) for y in (-40, 0, 40) for p in (-20, 0, 20)]
render_views(mesh, views)
n, tic = 0, time.perf_counter()
while time.perf_counter() - tic < float(sys.argv[1]):
    render_views(mesh, views)
    n += len(views)
print(n / (time.perf_counter() - tic))
"""
# The neighbour: a one-thread torch job (matrix products) that keeps one core busy.
_BUSY_NEIGHBOUR = """
import time, torch
torch.set_num_threads(1)
a = torch.randn(512, 512)
while True:
    a @ a
"""


def bench_shared_cpu(args) -> None:
    """render_views idle and beside a busy one-thread torch job, OpenMP spinning or sleeping.

    OMP_WAIT_POLICY is read when torch loads, so each case is a fresh process; the children
    run `import torch` before facet, so the variable set here is the one in force.
    """
    import subprocess
    import sys

    seconds = "4" if args.quick else "10"
    rows, idle_active = [], None
    for neighbour in (False, True):
        busy = subprocess.Popen([sys.executable, "-c", _BUSY_NEIGHBOUR]) if neighbour else None
        try:
            time.sleep(1 if neighbour else 0)  # let the neighbour start spinning
            for policy in ("ACTIVE", "PASSIVE"):
                env = {**os.environ, "OMP_WAIT_POLICY": policy}
                out = subprocess.run([sys.executable, "-c", _RENDER_CHILD, seconds], env=env,
                                     capture_output=True, text=True, check=True).stdout
                speed = float(out.split()[-1])
                idle_active = idle_active or speed
                rows.append(["beside a 1-thread job" if neighbour else "idle", policy,
                             f"{speed:.1f}", f"{speed / idle_active:.2f}"])
        finally:
            if busy:
                busy.kill()
                busy.wait()
    print_table("render_views on a shared CPU (demo face, 9 views, 224 px, 2 threads)",
                ["machine", "OMP_WAIT_POLICY", "views/s", "x idle ACTIVE"], rows)


SECTIONS = {
    "raster": bench_raster,
    "clip": bench_clip,
    "mesh": bench_mesh,
    "cache": bench_cache,
    "train": bench_train,
    "shared_cpu": bench_shared_cpu,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--only", choices=sorted(SECTIONS), action="append",
                        help="run only these sections (repeatable)")
    parser.add_argument("--quick", action="store_true", help="fewer repeats, smaller sizes")
    args = parser.parse_args()
    from facet.runtime import keep_freed_memory

    print(f"CPU: {cpu_model()}, {os.cpu_count()} cores; torch {torch_version()}")
    # The raster section first: it measures glibc's default malloc before switching to
    # facet.runtime's memory policy, which every other section runs with, as facet's commands do.
    for name in sorted(args.only or SECTIONS, key=lambda name: name != "raster"):
        if name != "raster":
            keep_freed_memory()
        SECTIONS[name](args)


if __name__ == "__main__":
    main()
