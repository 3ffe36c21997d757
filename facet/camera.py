"""Cameras: look-at view matrices, perspective and orthographic projections, and view lists.

Conventions (OpenGL's, stated once for all of facet's rendering, see also `facet.raster`):
right-handed world, y up; a camera looks down its own -z axis with +x to the right and +y up.
A projection maps camera space to homogeneous clip space (x, y, z, w); after the divide by w,
normalised device coordinates (NDC) lie in [-1, 1]^3 for visible points, z = -1 on the near
plane and +1 on the far plane.

The views of a face are given as (yaw, pitch) in degrees around the normalised face
(`facet.mesh.normalize`: centred, largest side 1, looking down +z toward the viewer). The camera
sits on a sphere around the origin: yaw > 0 moves it toward +x (the viewer's right, so the face's
left cheek turns into view), pitch > 0 moves it up. (0, 0) is the frontal view from +z. The
paper's lineage renders yaw -20 / 0 / +20 (left / front / right); this parameterisation is ours.

Shapes: V views, N vertices.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

DEFAULT_VIEWS = ((-20.0, 0.0), (0.0, 0.0), (20.0, 0.0))
DEFAULT_DISTANCE = 2.2  # camera distance in face sizes: mild perspective, and the face fills
#                        ~85% of the frame at yaw +-20 (pixels on the face, not on background)
DEFAULT_FOV = 30.0  # vertical field of view (degrees): a unit face fills most of the frame


@dataclass
class Cameras:
    """V cameras: world -> camera (`view`) and camera -> clip (`projection`) matrices.

    Attributes:
        view: (V, 4, 4) float32 rigid transforms, world to camera space.
        projection: (V, 4, 4) float32 projections, camera to clip space.
    """

    view: torch.Tensor
    projection: torch.Tensor

    def __len__(self) -> int:
        return len(self.view)

    def to(self, device: torch.device | str | None) -> Cameras:
        return Cameras(self.view.to(device), self.projection.to(device))

    def transform(self, verts: torch.Tensor) -> torch.Tensor:
        """Project world points (N, 3) into clip space (V, N, 4) for every camera."""
        homogeneous = torch.cat([verts, torch.ones_like(verts[:, :1])], dim=1)  # (N, 4)
        world_to_clip = self.projection @ self.view  # (V, 4, 4)
        # One (N, 4) x (4, 4V) product for all views: a batch of V products with an inner
        # dimension of 4 ran five times slower.
        clip = homogeneous @ world_to_clip.reshape(-1, 4).t()  # (N, 4V)
        return clip.view(len(verts), -1, 4).transpose(0, 1).contiguous()  # (V, N, 4)

    def to_camera(self, verts: torch.Tensor) -> torch.Tensor:
        """World points (N, 3) in every camera's frame (V, N, 3); depth along the view is -z."""
        return verts @ self.view[:, :3, :3].transpose(1, 2) + self.view[:, None, :3, 3]  # (V, N, 3)


def look_at(eye: torch.Tensor, target: torch.Tensor | None = None,
            up: tuple[float, float, float] = (0.0, 1.0, 0.0)) -> torch.Tensor:
    """View matrices of cameras at `eye` looking at `target`.

    Args:
        eye: (V, 3) camera positions.
        target: (V, 3) or (3,) points looked at; the origin if None.
        up: world direction that appears upward in the image (must not be parallel to the view).
    Returns:
        (V, 4, 4) float32 world-to-camera matrices; the camera looks down its -z axis.
    """
    eye = torch.as_tensor(eye, dtype=torch.float32)
    target = torch.zeros(3) if target is None else torch.as_tensor(target, dtype=torch.float32)
    backward = torch.nn.functional.normalize(eye - target.to(eye), dim=-1)  # camera +z
    up_t = torch.tensor(up, dtype=torch.float32, device=eye.device).expand_as(backward)
    right = torch.linalg.cross(up_t, backward, dim=-1)
    if (right.norm(dim=-1) < 1e-6).any():
        raise ValueError(f"look_at: up {up} is parallel to a viewing direction")
    right = torch.nn.functional.normalize(right, dim=-1)
    true_up = torch.linalg.cross(backward, right, dim=-1)
    rotation = torch.stack([right, true_up, backward], dim=1)  # (V, 3, 3): rows = camera axes
    view = torch.eye(4, device=eye.device).repeat(len(eye), 1, 1)  # (V, 4, 4)
    view[:, :3, :3] = rotation
    view[:, :3, 3] = -(rotation @ eye[:, :, None])[:, :, 0]
    return view


def perspective(fov_y: float = DEFAULT_FOV, aspect: float = 1.0, near: float = 0.5,
                far: float = 10.0) -> torch.Tensor:
    """OpenGL perspective projection (4, 4): clip w = depth along the view (-z_camera).

    Args:
        fov_y: vertical field of view in degrees.
        aspect: width / height of the image.
        near, far: distances of the clipping planes, 0 < near < far.
    """
    if not (0 < fov_y < 180 and 0 < near < far and aspect > 0):
        raise ValueError(f"perspective: need 0 < fov_y < 180, 0 < near < far, aspect > 0; got "
                         f"fov_y={fov_y}, near={near}, far={far}, aspect={aspect}")
    f = 1.0 / math.tan(math.radians(fov_y) / 2)
    return torch.tensor([[f / aspect, 0, 0, 0],
                         [0, f, 0, 0],
                         [0, 0, (far + near) / (near - far), 2 * far * near / (near - far)],
                         [0, 0, -1, 0]], dtype=torch.float32)


def orthographic(half_height: float = 0.7, aspect: float = 1.0, near: float = 0.5,
                 far: float = 10.0) -> torch.Tensor:
    """OpenGL orthographic projection (4, 4) of the box |y| <= half_height, near <= depth <= far."""
    if not (half_height > 0 and 0 <= near < far and aspect > 0):
        raise ValueError(f"orthographic: need half_height > 0, 0 <= near < far, aspect > 0; got "
                         f"half_height={half_height}, near={near}, far={far}, aspect={aspect}")
    half_width = half_height * aspect
    return torch.tensor([[1 / half_width, 0, 0, 0],
                         [0, 1 / half_height, 0, 0],
                         [0, 0, -2 / (far - near), -(far + near) / (far - near)],
                         [0, 0, 0, 1]], dtype=torch.float32)


def view_cameras(views=DEFAULT_VIEWS, distance: float = DEFAULT_DISTANCE,
                 fov_y: float = DEFAULT_FOV, orthographic_view: bool = False,
                 aspect: float = 1.0) -> Cameras:
    """Cameras on a sphere around the origin for (yaw, pitch) degree pairs (see module docstring).

    Args:
        views: sequence of V (yaw, pitch) pairs in degrees.
        distance: radius of the sphere the cameras sit on (the normalised face has size 1).
        fov_y: vertical field of view in degrees; with `orthographic_view`, the orthographic box
            is the one the perspective camera sees at the origin, so both frame the face alike.
        orthographic_view: parallel projection instead of perspective.
        aspect: width / height of the image.
    Returns:
        `Cameras` with V views, all looking at the origin, up = +y.
    """
    angles = torch.tensor([[float(yaw), float(pitch)] for yaw, pitch in views],
                          dtype=torch.float64).reshape(-1, 2)  # (V, 2)
    if len(angles) == 0 or (angles[:, 1].abs() >= 90).any():
        raise ValueError(f"view_cameras: need at least one view and |pitch| < 90, got {views}")
    yaw, pitch = torch.deg2rad(angles).unbind(1)
    eye = distance * torch.stack([torch.sin(yaw) * torch.cos(pitch), torch.sin(pitch),
                                  torch.cos(yaw) * torch.cos(pitch)], dim=1)  # (V, 3)
    near, far = distance / 4, distance * 4  # the unit face lies well inside, depth keeps precision
    if orthographic_view:
        half_height = distance * math.tan(math.radians(fov_y) / 2)
        projection = orthographic(half_height, aspect, near, far)
    else:
        projection = perspective(fov_y, aspect, near, far)
    return Cameras(look_at(eye.float()), projection.expand(len(eye), 4, 4).clone())


def parse_views(text: str) -> tuple[tuple[float, float], ...]:
    """Parse "yaw,pitch;yaw,pitch;..." (degrees) into ((yaw, pitch), ...).

    A lone number means (yaw, 0): "-20;0;20" is the default three views.

    Raises:
        ValueError: naming the item that is not 'yaw,pitch', or no view at all.
    """
    views = []
    for item in (i for i in text.replace(" ", "").split(";") if i):
        try:
            numbers = [float(p) for p in item.split(",")]
        except ValueError:
            numbers = []
        if len(numbers) not in (1, 2) or not all(math.isfinite(n) for n in numbers):
            raise ValueError(f"views {text!r}: cannot read {item!r}; expected 'yaw,pitch;...' "
                             "in degrees, e.g. '-20,0;0,0;20,0'")
        views.append((numbers[0], numbers[1] if len(numbers) == 2 else 0.0))
    if not views:
        raise ValueError(f"views {text!r}: no view given; e.g. '-20,0;0,0;20,0'")
    return tuple(views)


def format_views(views) -> str:
    """((yaw, pitch), ...) -> "yaw,pitch;..." (the inverse of `parse_views`)."""
    return ";".join(f"{yaw:g},{pitch:g}" for yaw, pitch in views)


def view_name(yaw: float, pitch: float = 0.0) -> str:
    """How a view is labelled in pictures and reports: "yaw -20", "yaw +0 pitch +15"."""
    return f"yaw {yaw:+g}" + (f" pitch {pitch:+g}" if pitch else "")
