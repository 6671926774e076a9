"""A small synthetic nuScenes (+ DriveLM QA) in the real public layouts, rendered so labels match the pixels.

Writes::

    out/nuscenes/v1.0-mini/{category,attribute,visibility,instance,sensor,calibrated_sensor,ego_pose,log,scene,
                            sample,sample_data,sample_annotation,map}.json
    out/nuscenes/samples/CAM_*/<log>__CAM_X__<timestamp>.jpg       1600x900 camera images
    out/nuscenes/samples/LIDAR_TOP/<log>__LIDAR_TOP__<timestamp>.pcd.bin
    out/nuscenes/maps/<token>.png
    out/drivelm/v1_1_train_nus.json                                 DriveLM v1.1 layout, train scenes
    out/drivelm/v1_1_val_nus_q_only.json                            val scenes, questions only

The tables follow the nuScenes schema (32-hex tokens, prev/next links, per-sensor ego poses) and load with the
real devkit (``NuScenes('v1.0-mini', out/'nuscenes')``). Scene names come from the official mini split (scene
0, 1: mini_train, scene 2: mini_val, ...), so the devkit's split lists apply.

**World.** Each scene has a straight road along the ego's heading; the ego drives at a constant speed and 6-9
objects (cars, trucks, buses, pedestrians, bicycles, barriers, traffic cones with nuScenes sizes) stand or move
around it. Key frames are 0.5 s apart; each camera has its own timestamp and ego pose.

**Cameras.** Six 1600x900 pinhole cameras with nuScenes-like intrinsics and extrinsics: level, yawed 0 (front),
±55° (front left / right), ±110° (back left / right) and 180° (back, wider lens), mounted at about 1.5 m.

**Rendering.** Each image is sky and road with lane lines, then every annotated box that the devkit reports in
that camera (all corners in front of it, a corner inside the image: ``BoxVisibility.ANY``) drawn far to near as
its projected cuboid, filled with the instance's colour: the devkit's projected 2-D box is exactly the extent of
the drawn shape (where nothing nearer covers it). The visibility token of an annotation is measured: visible
pixels over all six images / its projected pixels, binned as nuScenes does (1: 0-40 % ... 4: 80-100 %).

**DriveLM** QA per key frame (perception, prediction, planning, behavior, DriveLM's question wording) about 3-5
key objects named by c-tags ``<cN,CAM,x,y>``: the camera where the object's clipped 2-D box is largest and that
box's centre, with ``2d_bbox`` in ``key_object_infos``. Image paths use the official ``../nuscenes/samples/...``
form. The q-only file holds the val scenes' questions with empty answers (multiple-choice questions carry their
options, DriveLM test style).

Deterministic: the same seed writes the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from domains.base import DomainError
from domains.driving.drivelm import (
    BEHAVIOR_CHOICES,
    MOVING_STATUS_CHOICES,
    _whole,
    choice_question,
    drivelm_tag,
)
from domains.driving.layout import CAMERA_SIZE, STITCH_ORDER
from model.progress import Progress, progress_bar

__all__ = ["CAMERA_RIG", "CATEGORIES", "MINI_SCENES", "generate"]

VERSION = "v1.0-mini"
W, H = CAMERA_SIZE

# camera -> (yaw deg, translation in the ego frame (m), (fx, fy, cx, cy), timestamp offset from the sample, µs)
CAMERA_RIG: dict[str, tuple[float, tuple[float, float, float], tuple[float, float, float, float], int]] = {
    "CAM_FRONT": (0.0, (1.70079, 0.01591, 1.51095), (1266.417, 1266.417, 816.267, 491.507), -35491),
    "CAM_FRONT_RIGHT": (-55.0, (1.55084, -0.49340, 1.49574), (1260.847, 1260.847, 807.968, 495.334), -27612),
    "CAM_BACK_RIGHT": (-110.0, (1.02827, -0.48350, 1.57896), (1259.514, 1259.514, 807.252, 501.196), -20058),
    "CAM_BACK": (180.0, (0.02832, 0.00345, 1.57910), (809.221, 809.221, 829.219, 481.771), -10426),
    "CAM_BACK_LEFT": (110.0, (1.03569, 0.48479, 1.59097), (1256.748, 1256.748, 817.789, 451.954), -528),
    "CAM_FRONT_LEFT": (55.0, (1.52387, 0.49463, 1.50932), (1272.598, 1272.598, 826.616, 479.752), -43107),
}
LIDAR_TRANSLATION = (0.943713, 0.0, 1.84023)

# the official v1.0-mini scenes, train and val interleaved so a few scenes already cover both splits
MINI_SCENES: tuple[tuple[str, str], ...] = (
    ("scene-0061", "train"), ("scene-0553", "train"), ("scene-0103", "val"), ("scene-0655", "train"),
    ("scene-0916", "val"), ("scene-0757", "train"), ("scene-0796", "train"), ("scene-1077", "train"),
    ("scene-1094", "train"), ("scene-1100", "train"),
)
LOCATIONS = ("singapore-onenorth", "boston-seaport", "singapore-queenstown", "singapore-hollandvillage")

# nuScenes categories (all of them go in the category table)
CATEGORIES: dict[str, str] = {
    "animal": "All animals, e.g. cats, rats, dogs, deer, birds.",
    "human.pedestrian.adult": "Adult subcategory.",
    "human.pedestrian.child": "Child subcategory.",
    "human.pedestrian.construction_worker": "Construction worker",
    "human.pedestrian.personal_mobility": "A small electric or self-propelled vehicle, e.g. skateboard, segway.",
    "human.pedestrian.police_officer": "Police officer.",
    "human.pedestrian.stroller": "Strollers.",
    "human.pedestrian.wheelchair": "Wheelchairs.",
    "movable_object.barrier": "Temporary road barrier placed in the scene in order to redirect traffic.",
    "movable_object.debris": "Movable object that is left on the driveable surface.",
    "movable_object.pushable_pullable": "Objects that a pedestrian may push or pull.",
    "movable_object.trafficcone": "All types of traffic cone.",
    "static_object.bicycle_rack": "Area or device intended to park or secure the bicycles in a row.",
    "vehicle.bicycle": "Human or electric powered 2-wheeled vehicle designed to travel at lower speeds.",
    "vehicle.bus.bendy": "Bendy bus subcategory.",
    "vehicle.bus.rigid": "Rigid bus subcategory.",
    "vehicle.car": "Vehicle designed primarily for personal use, e.g. sedans, hatch-backs, wagons, vans.",
    "vehicle.construction": "Vehicles primarily designed for construction. Typically very slow moving or stationary.",
    "vehicle.emergency.ambulance": "All types of ambulances.",
    "vehicle.emergency.police": "All types of police vehicles.",
    "vehicle.motorcycle": "Gasoline or electric powered 2-wheeled vehicle designed to move rapidly.",
    "vehicle.trailer": "Any vehicle trailer, both for trucks, cars and bikes.",
    "vehicle.truck": "Vehicles primarily designed to haul cargo including pick-ups, lorries, trucks and semi-tractors.",
}
ATTRIBUTES = {
    "vehicle.moving": "Vehicle is moving.",
    "vehicle.stopped": "Vehicle, with a driver/rider in/on it, is currently stationary but has an intent to move.",
    "vehicle.parked": "Vehicle is stationary (usually for longer duration) with no immediate intent to move.",
    "cycle.with_rider": "There is a rider on the bicycle or motorcycle.",
    "cycle.without_rider": "There is NO rider on the bicycle or motorcycle.",
    "pedestrian.sitting_lying_down": "The human is sitting or lying down.",
    "pedestrian.standing": "The human is standing.",
    "pedestrian.moving": "The human is moving.",
}
VISIBILITY = (("1", "v0-40", "visibility of whole object is between 0 and 40%"),
              ("2", "v40-60", "visibility of whole object is between 40 and 60%"),
              ("3", "v60-80", "visibility of whole object is between 60 and 80%"),
              ("4", "v80-100", "visibility of whole object is between 80 and 100%"))


@dataclass(frozen=True)
class _Kind:
    size: tuple[float, float, float]  # w, l, h (nuScenes order)
    weight: float
    group: str  # vehicle | pedestrian | cycle | static
    noun: str
    drivelm_category: str
    speed: tuple[float, float] = (0.0, 0.0)


KINDS: dict[str, _Kind] = {
    "vehicle.car": _Kind((1.95, 4.62, 1.73), 5.0, "vehicle", "car", "Vehicle", (3.0, 9.0)),
    "vehicle.truck": _Kind((2.51, 6.93, 2.84), 1.0, "vehicle", "truck", "Vehicle", (3.0, 7.0)),
    "vehicle.bus.rigid": _Kind((2.94, 11.19, 3.47), 0.5, "vehicle", "bus", "Vehicle", (3.0, 6.0)),
    "human.pedestrian.adult": _Kind((0.67, 0.73, 1.77), 2.0, "pedestrian", "pedestrian", "Pedestrian", (0.8, 1.6)),
    "vehicle.bicycle": _Kind((0.61, 1.70, 1.29), 0.7, "cycle", "bicycle", "Cyclist", (2.5, 5.0)),
    "movable_object.barrier": _Kind((2.53, 0.50, 0.98), 1.0, "static", "barrier", "Traffic element"),
    "movable_object.trafficcone": _Kind((0.41, 0.41, 1.07), 1.0, "static", "traffic cone", "Traffic element"),
}
# instance colours: saturated, far from the sky / road / lane-line colours and from each other
PALETTE: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("red", (220, 30, 30)), ("yellow", (240, 210, 20)), ("green", (30, 170, 50)), ("orange", (245, 130, 20)),
    ("purple", (140, 40, 170)), ("pink", (245, 100, 190)), ("cyan", (20, 200, 210)), ("brown", (120, 70, 20)),
    ("black", (15, 15, 15)), ("navy", (20, 30, 120)), ("lime", (160, 235, 40)), ("maroon", (110, 10, 40)),
)
_FACES = ((0, 1, 2, 3), (4, 5, 6, 7), (0, 1, 5, 4), (3, 2, 6, 7), (0, 3, 7, 4), (1, 2, 6, 5))
MAX_FRAMES = 40
KEY_FRAME_US = 500_000
DIRECTION = {"CAM_FRONT": "to the front", "CAM_FRONT_LEFT": "to the front left", "CAM_FRONT_RIGHT":
             "to the front right", "CAM_BACK": "to the back", "CAM_BACK_LEFT": "to the back left",
             "CAM_BACK_RIGHT": "to the back right"}
GRAPH_QUESTION = (
    "What object should the ego vehicle notice first when the ego vehicle is getting to the next possible location? "
    "What is the state of the object that is first noticed by the ego vehicle and what action should the ego "
    "vehicle take? What object should the ego vehicle notice second when the ego vehicle is getting to the next "
    "possible location? What is the state of the object perceived by the ego vehicle as second and what action "
    "should the ego vehicle take? What object should the ego vehicle notice third? What is the state of the object "
    "perceived by the ego vehicle as third and what action should the ego vehicle take?")
IMPORTANT_QUESTION = ("What are the important objects in the current scene? Those objects will be considered for the "
                      "future reasoning and driving decision.")


# --------------------------------------------------------------------------------------------- geometry
def _q_yaw(yaw: float) -> np.ndarray:
    return np.array([math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2)])


def _q_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    w1, x1, y1, z1 = a
    w2, x2, y2, z2 = b
    return np.array([w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2, w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
                     w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2, w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2])


def _rot(q: Sequence[float]) -> np.ndarray:
    w, x, y, z = np.asarray(q, dtype=float) / np.linalg.norm(q)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                     [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                     [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])


# a forward-looking camera: its z (optical axis) along ego x, its x (right) along ego -y, its y (down) along -z
_Q_CAM = np.array([0.5, -0.5, 0.5, -0.5])


def _camera_quaternion(yaw_deg: float) -> list[float]:
    return [float(v) for v in _q_mul(_q_yaw(math.radians(yaw_deg)), _Q_CAM)]


def _box_corners(center: Sequence[float], wlh: Sequence[float], yaw: float) -> np.ndarray:
    """(3, 8) corners in the devkit's order (first four facing forward)."""
    w, l, h = wlh
    local = np.array([l / 2 * np.array([1, 1, 1, 1, -1, -1, -1, -1]), w / 2 * np.array([1, -1, -1, 1, 1, -1, -1, 1]),
                      h / 2 * np.array([1, 1, -1, -1, 1, 1, -1, -1])])
    return _rot(_q_yaw(yaw)) @ local + np.asarray(center, dtype=float)[:, None]


@dataclass
class _Camera:
    name: str
    rotation: list[float]  # quaternion camera -> ego
    translation: list[float]
    intrinsic: list[list[float]]

    def to_camera(self, pts_ego: np.ndarray) -> np.ndarray:
        return _rot(self.rotation).T @ (pts_ego - np.asarray(self.translation)[:, None])

    def project(self, pts_cam: np.ndarray) -> np.ndarray:
        p = np.asarray(self.intrinsic) @ pts_cam
        return p[:2] / p[2:3]


def _rig() -> dict[str, _Camera]:
    return {name: _Camera(name, _camera_quaternion(yaw), list(t), [[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
            for name, (yaw, t, (fx, fy, cx, cy), _) in CAMERA_RIG.items()}


def _clip_to_image(poly: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """A convex polygon clipped to the image rectangle (Sutherland-Hodgman): the cuboid's projection within the
    image is the union of its clipped faces, so the 2-D box is the extent of the convex hull inside the canvas."""
    edges = ((0, 0.0, 1), (0, float(W), -1), (1, 0.0, 1), (1, float(H), -1))  # (axis, limit, keep side)
    for axis, limit, side in edges:
        if not poly:
            break
        out = []
        for k, cur in enumerate(poly):
            prev = poly[k - 1]
            cur_in, prev_in = side * (cur[axis] - limit) >= 0, side * (prev[axis] - limit) >= 0
            if cur_in != prev_in:
                f = (limit - prev[axis]) / (cur[axis] - prev[axis])
                out.append((prev[0] + f * (cur[0] - prev[0]), prev[1] + f * (cur[1] - prev[1])))
            if cur_in:
                out.append(cur)
        poly = out
    return poly


def _devkit_visible(corners_cam: np.ndarray, uv: np.ndarray) -> bool:
    """``box_in_image(..., BoxVisibility.ANY)``: every corner 0.1 m in front, a corner inside with depth > 1 m."""
    z = corners_cam[2]
    inside = (uv[0] > 0) & (uv[0] < W) & (uv[1] > 0) & (uv[1] < H) & (z > 1)
    return bool((z > 0.1).all() and inside.any())


# --------------------------------------------------------------------------------------------- world
@dataclass
class _Object:
    index: int
    category: str
    kind: _Kind
    colour: tuple[str, tuple[int, int, int]]
    pos0: np.ndarray  # global x, y at t = 0
    yaw: float  # global heading
    speed: float
    instance: str = ""
    tokens: list[str] = field(default_factory=list)  # annotation token per frame

    def center(self, t: float) -> list[float]:
        p = self.pos0 + self.speed * t * np.array([math.cos(self.yaw), math.sin(self.yaw)])
        return [float(p[0]), float(p[1]), self.kind.size[2] / 2]


@dataclass
class _Ego:
    pos0: np.ndarray
    yaw: float
    speed: float

    def pose(self, t: float) -> tuple[list[float], list[float]]:
        p = self.pos0 + self.speed * t * np.array([math.cos(self.yaw), math.sin(self.yaw)])
        return [float(p[0]), float(p[1]), 0.0], [float(v) for v in _q_yaw(self.yaw)]

    def to_ego(self, pts: np.ndarray, t: float) -> np.ndarray:
        trans, rot = self.pose(t)
        return _rot(rot).T @ (pts - np.asarray(trans)[:, None])


def _token(seed: int, *parts: Any) -> str:
    return hashlib.md5("/".join(["pocket-adapt-synthetic-nuscenes", str(seed), *map(str, parts)]).encode()).hexdigest()


def _make_scene(rng: np.random.Generator, scene_index: int, n_frames: int) -> tuple[_Ego, list[_Object]]:
    ego = _Ego(np.array([300.0 + 250.0 * scene_index, 600.0 + 40.0 * scene_index]), float(rng.uniform(-math.pi, math.pi)),
               float(rng.choice([0.0, 3.0, 6.0, 9.5, 12.5])))
    names = list(KINDS)
    weights = np.array([KINDS[n].weight for n in names])
    count = int(rng.integers(6, 10))
    objects: list[_Object] = []
    times = [k * KEY_FRAME_US / 1e6 for k in range(n_frames)]
    tries = 0
    while len(objects) < count and tries < 400:
        tries += 1
        category = names[int(rng.choice(len(names), p=weights / weights.sum()))]
        kind = KINDS[category]
        front = len(objects) < 3 or rng.random() < 0.5  # the first few ahead, so every frame has key objects
        bearing = rng.uniform(-0.7, 0.7) if front else rng.uniform(-math.pi, math.pi)
        dist = rng.uniform(9.0, 26.0) if front else rng.uniform(8.0, 30.0)
        rel = np.array([dist * math.cos(bearing), dist * math.sin(bearing)])
        if kind.group in ("vehicle", "cycle"):
            heading = float(rng.choice([0.0, math.pi])) + rng.normal(0, 0.04)
        elif kind.group == "pedestrian":
            heading = rng.uniform(-math.pi, math.pi)
        else:
            heading = rng.normal(0, 0.05)
        moving = kind.speed[1] > 0 and rng.random() < 0.6
        speed = float(rng.uniform(*kind.speed)) if moving else 0.0
        c, s = math.cos(ego.yaw), math.sin(ego.yaw)
        pos0 = ego.pos0 + np.array([c * rel[0] - s * rel[1], s * rel[0] + c * rel[1]])
        cand = _Object(len(objects), category, kind, PALETTE[len(objects) % len(PALETTE)], pos0, ego.yaw + heading,
                       speed)
        if all(_clear(cand, other, ego, t) for t in times for other in [None, *objects]):
            objects.append(cand)
    return ego, objects


def _clear(obj: _Object, other: _Object | None, ego: _Ego, t: float) -> bool:
    p = np.array(obj.center(t)[:2])
    r = math.hypot(obj.kind.size[0], obj.kind.size[1]) / 2
    if other is None:
        return float(np.linalg.norm(p - np.array(ego.pose(t)[0][:2]))) > 6.0 + r
    q = np.array(other.center(t)[:2])
    return float(np.linalg.norm(p - q)) > r + math.hypot(other.kind.size[0], other.kind.size[1]) / 2 + 1.0


# --------------------------------------------------------------------------------------------- rendering
def _background(cam: _Camera) -> Image.Image:
    cy = cam.intrinsic[1][2]  # level cameras: the horizon is the principal row
    rows = np.arange(H, dtype=np.float64)[:, None]
    sky = np.clip(rows / max(cy, 1.0), 0, 1)
    ground = np.clip((rows - cy) / max(H - cy, 1.0), 0, 1)
    top, bottom = np.array([150.0, 190.0, 232.0]), np.array([205.0, 222.0, 240.0])
    near, far = np.array([70.0, 70.0, 76.0]), np.array([118.0, 118.0, 124.0])
    col = np.where(rows < cy, top + (bottom - top) * sky, far + (near - far) * ground)  # (H, 3)
    img = Image.fromarray(np.repeat(col[:, None, :], W, axis=1).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(img)
    xs = np.arange(-80.0, 80.5, 1.0)
    for lane_y in (-5.25, -1.75, 1.75, 5.25):  # lane lines on the ground, ego frame
        pts = cam.to_camera(np.vstack([xs, np.full_like(xs, lane_y), np.zeros_like(xs)]))
        uv = cam.project(np.where(pts[2] > 0.5, pts, 1.0))
        ok = pts[2] > 0.5
        for k in range(len(xs) - 1):
            if ok[k] and ok[k + 1]:
                draw.line([(uv[0, k], uv[1, k]), (uv[0, k + 1], uv[1, k + 1])], fill=(232, 232, 222), width=5)
    return img


@dataclass
class _View:
    """One object in one camera image."""

    box: tuple[float, float, float, float]  # clipped projected extent (px)
    area: float
    visible_px: int = 0
    full_px: int = 0


def _render_camera(cam: _Camera, ego: _Ego, objects: list[_Object], t: float, t_ego: float
                   ) -> tuple[Image.Image, dict[int, _View]]:
    """One camera image: objects at time `t` (the sample's), seen from the ego pose at `t_ego` (the camera's
    timestamp), as the devkit transforms a key frame's boxes into that camera."""
    img = _background(cam)
    ids = Image.new("L", (W, H), 0)
    draw, id_draw = ImageDraw.Draw(img), ImageDraw.Draw(ids)
    placed = []
    for obj in objects:
        corners = cam.to_camera(ego.to_ego(_box_corners(obj.center(t), obj.kind.size, obj.yaw), t_ego))
        uv = cam.project(corners)
        if not _devkit_visible(corners, uv):
            continue
        placed.append((float(cam.to_camera(ego.to_ego(np.array(obj.center(t))[:, None], t_ego))[2, 0]), obj, uv))
    views: dict[int, _View] = {}
    for depth, obj, uv in sorted(placed, key=lambda p: -p[0]):  # far to near
        polys = [[(float(uv[0, i]), float(uv[1, i])) for i in face] for face in _FACES]
        inside = [p for poly in polys for p in _clip_to_image(poly)]
        if not inside:
            continue
        x1, y1 = min(p[0] for p in inside), min(p[1] for p in inside)
        x2, y2 = max(p[0] for p in inside), max(p[1] for p in inside)
        if x2 <= x1 or y2 <= y1:
            continue
        for poly in polys:
            draw.polygon(poly, fill=obj.colour[1])
            id_draw.polygon(poly, fill=obj.index + 1)
        # the object's own projected pixels (within the image), for the visibility ratio
        ox, oy = math.floor(x1), math.floor(y1)
        mask = Image.new("1", (math.ceil(x2) - ox + 1, math.ceil(y2) - oy + 1), 0)
        mdraw = ImageDraw.Draw(mask)
        for poly in polys:
            mdraw.polygon([(x - ox, y - oy) for x, y in poly], fill=1)
        views[obj.index] = _View((x1, y1, x2, y2), (x2 - x1) * (y2 - y1), full_px=int(np.count_nonzero(mask)))
    counts = np.bincount(np.asarray(ids).ravel(), minlength=len(objects) + 1)
    for index, view in views.items():
        view.visible_px = int(counts[index + 1])
    return img, views


def _visibility_token(views: list[_View]) -> str:
    full = sum(v.full_px for v in views)
    frac = sum(v.visible_px for v in views) / full if full else 0.0
    return "4" if frac > 0.8 else "3" if frac > 0.6 else "2" if frac > 0.4 else "1"


# --------------------------------------------------------------------------------------------- DriveLM QA
def _r1(v: float) -> float:
    return round(float(v), 1)


@dataclass
class _Key:
    obj: _Object
    camera: str
    box: tuple[float, float, float, float]
    ego_xy: tuple[float, float]
    number: int = 0

    @property
    def tag(self) -> str:
        x1, y1, x2, y2 = (_r1(v) for v in self.box)
        return f"<c{self.number},{self.camera},{_r1((x1 + x2) / 2)},{_r1((y1 + y2) / 2)}>"

    @property
    def name(self) -> str:
        return f"{self.obj.colour[0]} {self.obj.kind.noun}"

    @property
    def movable(self) -> bool:
        return self.obj.kind.group != "static"

    @property
    def in_path(self) -> bool:
        return self.ego_xy[0] > 0 and abs(self.ego_xy[1]) < 2.5

    @property
    def distance(self) -> float:
        return math.hypot(*self.ego_xy)


def _qa(q: str, a: str) -> dict:
    return {"Q": q, "A": a, "C": None, "con_up": None, "con_down": None, "cluster": None, "layer": None}


def _join(items: list[str]) -> str:
    if len(items) <= 2:
        return " and ".join(items)
    return ", ".join(items[:-1]) + ", and " + items[-1]


def _a(noun_phrase: str) -> str:
    return ("an " if noun_phrase[0] in "aeiou" else "a ") + noun_phrase


def _count_phrase(nouns: list[str]) -> str:
    words = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
    counts: dict[str, int] = {}
    for n in nouns:
        counts[n] = counts.get(n, 0) + 1
    parts = [f"{words[min(c, 9)]} {n}{'s' if c > 1 else ''}" for n, c in sorted(counts.items())]
    verb = "is" if len(nouns) == 1 else "are"
    return f"There {verb} {_join(parts)}"


def _speed_words(speed: float) -> str:
    if speed == 0:
        return "The ego vehicle is going straight. The ego vehicle is not moving."
    pace = ("driving slowly" if speed < 4 else "driving with normal speed" if speed < 8 else
            "driving fast" if speed < 11 else "driving very fast")
    return f"The ego vehicle is going straight. The ego vehicle is {pace}."


def _frame_qa(keys: list[_Key], front_nouns: list[str], ego: _Ego) -> dict[str, list[dict]]:
    perception, prediction, planning = [], [], []
    if keys:
        described = [f"{_a(k.name)} {DIRECTION[k.camera]} of the ego vehicle" for k in keys]
        perception.append(_qa(IMPORTANT_QUESTION, f"There is {_join(described)}. The IDs of these objects are "
                                                  f"{_join([k.tag for k in keys])}."))
    else:
        perception.append(_qa(IMPORTANT_QUESTION, "There is no important object in the current scene."))
    for k in keys:
        if k.movable:
            perception.append(_qa(f"What is the moving status of object {k.tag}?",
                                  "Going ahead." if k.obj.speed > 0 else "Stopped."))
        perception.append(_qa(f"What is the visual description of {k.tag}?", f"{k.name.capitalize()}."))
    perception.append(_qa("What are objects to the front of the ego car?",
                          f"{_count_phrase(front_nouns)} to the front of the ego car." if front_nouns
                          else "There is no object to the front of the ego car."))
    ranked = sorted(keys, key=lambda k: (not k.in_path, k.ego_xy[0] < 0, k.distance))  # ahead in the lane first
    for k in keys:
        prediction.append(_qa(f"Is {k.tag} a traffic sign or a road barrier?",
                              "Yes." if k.obj.category == "movable_object.barrier" else "No."))
        if k.movable:
            prediction.append(_qa(f"What is the future state of {k.tag}?",
                                  "Keep going straight." if k.obj.speed > 0 else "Stationary."))
        prediction.append(_qa(f"Would {k.tag} be in the moving direction of the ego vehicle?",
                              "Yes." if k.in_path else "No."))
    if ranked:
        order = ("Firstly", "Secondly", "Thirdly")
        parts = []
        for word, k in zip(order, ranked):
            state = "is going ahead" if k.obj.speed > 0 else "is stationary"
            action = ("slow down and keep a safe distance" if k.in_path else "keep going at the same speed")
            parts.append(f"{word} notice that {k.tag}. The object {state}, so the ego vehicle should {action}.")
        prediction.append(_qa(GRAPH_QUESTION, " ".join(parts)))
    for k in keys:
        if k.in_path and k.distance < 15:
            act = "The action is to brake gently to a stop. The reason is to keep a safe distance, high probability."
        elif k.in_path:
            act = "The action is to slow down. The reason is to keep a safe distance, high probability."
        else:
            act = "The action is to keep going at the same speed. The reason is there is no safety issue, high probability."
        planning.append(_qa(f"What actions could the ego vehicle take based on {k.tag}? Why take this action and "
                            "what's the probability?", act))
        if k.in_path:
            crash = f"Accelerating and going straight can lead to a collision with {k.tag}."
        elif k.ego_xy[0] < 0:
            crash = f"Backing up can lead to a collision with {k.tag}."
        else:
            crash = f"Sharp {'left' if k.ego_xy[1] > 0 else 'right'} turn can lead to a collision with {k.tag}."
        planning.append(_qa(f"What actions taken by the ego vehicle can lead to a collision with {k.tag}?", crash))
    close = any(k.in_path and k.distance < 15 for k in keys)
    planning.append(_qa("In this scenario, what are safe actions to take for the ego vehicle?",
                        "Brake gently to a stop, slow down." if close else
                        "Keep going at the same speed, decelerate gradually without braking."))
    if ranked:
        planning.append(_qa("What is the priority of the objects that the ego vehicle should consider?"
                            "(in descending order)", f"{', '.join(k.tag for k in ranked)}."))
    behavior = [_qa("Predict the behavior of the ego vehicle.", _speed_words(ego.speed))]
    return {"perception": perception, "prediction": prediction, "planning": planning, "behavior": behavior}


def _questions_only(scene: str, frame: str, qa: dict[str, list[dict]]) -> dict[str, list[dict]]:
    """The val file's form: answers withheld, tags set, multiple choice with options (DriveLM test style)."""
    out: dict[str, list[dict]] = {c: [] for c in qa}
    i = 0
    for category in ("perception", "prediction", "planning", "behavior"):
        for item in qa[category]:
            q, a = item["Q"], item["A"]
            tag = drivelm_tag(category, q, a)
            key = f"{scene}_{frame}_{i}"
            if category == "perception" and q.startswith("What is the moving status"):
                q = choice_question(q, a, MOVING_STATUS_CHOICES, key)[0]
            elif category == "behavior":
                q = choice_question(q, a, BEHAVIOR_CHOICES, key)[0]
            out[category].append({**item, "Q": q, "A": "", "tag": [tag]})
            i += 1
    return out


# --------------------------------------------------------------------------------------------- writer
def _dump(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1), encoding="utf-8")


def _lidar_points(ego: _Ego, objects: list[_Object], t: float, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """A small point cloud in the LIDAR_TOP frame: a ground ring and points on each box's sides."""
    rows = []
    ang = np.linspace(0, 2 * math.pi, 720, endpoint=False)
    for r in (4.0, 7.0, 11.0, 16.0):
        rows.append(np.vstack([r * np.cos(ang), r * np.sin(ang), np.zeros_like(ang)]))
    counts: dict[int, int] = {}
    for obj in objects:
        d = float(np.linalg.norm(ego.to_ego(np.array(obj.center(t))[:, None], t)[:2]))
        n = int(np.clip(4000 / max(d, 1.0) ** 2, 3, 300))
        w, l, h = obj.kind.size
        u, v = rng.uniform(-0.5, 0.5, n), rng.uniform(-0.5, 0.5, n)
        side = rng.integers(0, 4, n)
        local = np.vstack([np.where(side < 2, u * l, np.where(side == 2, l / 2, -l / 2)),
                           np.where(side < 2, np.where(side == 0, w / 2, -w / 2), u * w), v * h])
        pts = _rot(_q_yaw(obj.yaw)) @ local + np.asarray(obj.center(t))[:, None]
        rows.append(ego.to_ego(pts, t))
        counts[obj.index] = n
    ego_pts = np.hstack(rows)
    lidar = _rot(_q_yaw(-math.pi / 2)).T @ (ego_pts - np.asarray(LIDAR_TRANSLATION)[:, None])
    cloud = np.vstack([lidar, np.full(lidar.shape[1], 20.0), np.zeros(lidar.shape[1])]).T.astype(np.float32)
    return cloud, counts


def generate(out: str | Path, n_scenes: int = 3, n_frames: int = 3, seed: int = 0, quality: int = 90,
             drivelm: bool = True, progress: Progress = True) -> dict[str, Path]:
    """Write the synthetic nuScenes (and DriveLM QA) under `out`; returns ``{"nuscenes": dataroot, "drivelm": dir}``.

    `n_scenes` (1-10, named after the official mini scenes) x `n_frames` (1-40) key frames; `quality`: JPEG quality
    (1-95, PIL's useful range). `progress`: a bar over the frames (:func:`model.progress.progress_bar`).
    """
    for name, value in (("n_scenes", n_scenes), ("n_frames", n_frames), ("seed", seed)):
        # int() took seed=1.5 as seed 1 (another set than asked for, without a word) and "x" with a bare ValueError
        whole = isinstance(value, numbers.Integral) or isinstance(value, float) and value.is_integer()
        if isinstance(value, bool) or not whole:
            raise DomainError(f"{name} must be a whole number, got {value!r}")
    if not 1 <= int(n_scenes) <= len(MINI_SCENES):
        raise DomainError(f"n_scenes must be 1-{len(MINI_SCENES)} (the v1.0-mini scene names), got {n_scenes}")
    if int(n_frames) < 1:
        raise DomainError(f"n_frames must be >= 1, got {n_frames}")
    if int(n_frames) > MAX_FRAMES:  # refused before the per-frame lists are built
        raise DomainError(f"n_frames must be <= {MAX_FRAMES} (an official scene: 20 s of 2 Hz key frames), "
                          f"got {n_frames}")
    quality = _whole(quality, "quality (JPEG)", 1, 95)
    if int(seed) < 0:  # numpy's seeding refuses it with a bare ValueError deep in the first draw
        raise DomainError(f"seed must be a whole number >= 0, got {seed}")
    out = Path(out)
    root = out / "nuscenes"
    rig = _rig()
    tables: dict[str, list[dict]] = {name: [] for name in (
        "category", "attribute", "visibility", "instance", "sensor", "calibrated_sensor", "ego_pose", "log",
        "scene", "sample", "sample_data", "sample_annotation", "map")}
    cat_tok = {name: _token(seed, "category", name) for name in CATEGORIES}
    tables["category"] = [{"token": cat_tok[n], "name": n, "description": d} for n, d in CATEGORIES.items()]
    att_tok = {name: _token(seed, "attribute", name) for name in ATTRIBUTES}
    tables["attribute"] = [{"token": att_tok[n], "name": n, "description": d} for n, d in ATTRIBUTES.items()]
    tables["visibility"] = [{"description": d, "token": t, "level": lv} for t, lv, d in VISIBILITY]
    channels = [*CAMERA_RIG, "LIDAR_TOP"]
    sensor_tok = {ch: _token(seed, "sensor", ch) for ch in channels}
    tables["sensor"] = [{"token": sensor_tok[ch], "channel": ch, "modality": "lidar" if ch == "LIDAR_TOP" else "camera"}
                        for ch in channels]
    train_json: dict[str, Any] = {}
    val_json: dict[str, Any] = {}
    jobs = [(s, k) for s in range(int(n_scenes)) for k in range(int(n_frames))]
    bar = progress_bar(total=len(jobs), desc="synthetic nuScenes", unit="frame", progress=progress)
    for s in range(int(n_scenes)):
        rng = np.random.default_rng([811, int(seed), s])
        name, split = MINI_SCENES[s]
        location = LOCATIONS[s % len(LOCATIONS)]
        offset = "+0800" if location.startswith("singapore") else "-0400"
        logfile = f"n015-2018-07-{11 + s:02d}-11-22-45{offset}"
        log_tok, map_tok, scene_tok = _token(seed, "log", s), _token(seed, "map", s), _token(seed, "scene", s)
        tables["log"].append({"token": log_tok, "logfile": logfile, "vehicle": "n015",
                              "date_captured": f"2018-07-{11 + s:02d}", "location": location})
        map_png = root / "maps" / f"{map_tok}.png"
        map_png.parent.mkdir(parents=True, exist_ok=True)
        road = np.zeros((64, 64), np.uint8)
        road[24:40, :] = 255
        Image.fromarray(road, "L").save(map_png)
        tables["map"].append({"category": "semantic_prior", "token": map_tok, "filename": f"maps/{map_tok}.png",
                              "log_tokens": [log_tok]})
        calib = {}
        for ch in channels:
            tok = _token(seed, "calibrated_sensor", s, ch)
            if ch == "LIDAR_TOP":
                row = {"token": tok, "sensor_token": sensor_tok[ch], "translation": list(LIDAR_TRANSLATION),
                       "rotation": [float(v) for v in _q_yaw(-math.pi / 2)], "camera_intrinsic": []}
            else:
                cam = rig[ch]
                row = {"token": tok, "sensor_token": sensor_tok[ch], "translation": cam.translation,
                       "rotation": cam.rotation, "camera_intrinsic": cam.intrinsic}
            tables["calibrated_sensor"].append(row)
            calib[ch] = tok
        ego, objects = _make_scene(rng, s, int(n_frames))
        for obj in objects:
            obj.instance = _token(seed, "instance", s, obj.index)
            obj.tokens = [_token(seed, "sample_annotation", s, obj.index, k) for k in range(int(n_frames))]
            tables["instance"].append({"token": obj.instance, "category_token": cat_tok[obj.category],
                                       "nbr_annotations": int(n_frames), "first_annotation_token": obj.tokens[0],
                                       "last_annotation_token": obj.tokens[-1]})
        sample_toks = [_token(seed, "sample", s, k) for k in range(int(n_frames))]
        t0 = 1532402927647951 + s * 3_600_000_000
        tables["scene"].append({"token": scene_tok, "log_token": log_tok, "nbr_samples": int(n_frames),
                                "first_sample_token": sample_toks[0], "last_sample_token": sample_toks[-1],
                                "name": name, "description": f"Synthetic drive on a straight road, {location}."})
        sd_toks = {ch: [_token(seed, "sample_data", s, ch, k) for k in range(int(n_frames))] for ch in channels}
        for k, sample_tok in enumerate(sample_toks):
            ts = t0 + k * KEY_FRAME_US
            t = k * KEY_FRAME_US / 1e6
            tables["sample"].append({"token": sample_tok, "timestamp": ts, "prev": sample_toks[k - 1] if k else "",
                                     "next": sample_toks[k + 1] if k + 1 < len(sample_toks) else "",
                                     "scene_token": scene_tok})
            views_by_obj: dict[int, dict[str, _View]] = {}
            images: dict[str, str] = {}
            for ch in channels:
                offset_us = 0 if ch == "LIDAR_TOP" else CAMERA_RIG[ch][3]
                sd_ts = ts + offset_us
                t_sd = t + offset_us / 1e6
                pose_tok = _token(seed, "ego_pose", s, ch, k)
                trans, rot = ego.pose(t_sd)
                tables["ego_pose"].append({"token": pose_tok, "timestamp": sd_ts, "rotation": rot, "translation": trans})
                if ch == "LIDAR_TOP":
                    filename = f"samples/LIDAR_TOP/{logfile}__LIDAR_TOP__{sd_ts}.pcd.bin"
                    cloud, lidar_counts = _lidar_points(ego, objects, t, rng)
                    (root / filename).parent.mkdir(parents=True, exist_ok=True)
                    (root / filename).write_bytes(cloud.tobytes())
                    width = height = 0
                    fileformat = "pcd"
                else:
                    filename = f"samples/{ch}/{logfile}__{ch}__{sd_ts}.jpg"
                    # objects are annotated at the sample time; the camera sees them from its own ego pose
                    img, views = _render_camera(rig[ch], ego, objects, t, t_sd)
                    (root / filename).parent.mkdir(parents=True, exist_ok=True)
                    img.save(root / filename, format="JPEG", quality=int(quality))
                    for index, view in views.items():
                        views_by_obj.setdefault(index, {})[ch] = view
                    images[ch] = filename
                    width, height = W, H
                    fileformat = "jpg"
                toks = sd_toks[ch]
                tables["sample_data"].append({
                    "token": toks[k], "sample_token": sample_tok, "ego_pose_token": pose_tok,
                    "calibrated_sensor_token": calib[ch], "timestamp": sd_ts, "fileformat": fileformat,
                    "is_key_frame": True, "height": height, "width": width, "filename": filename,
                    "prev": toks[k - 1] if k else "", "next": toks[k + 1] if k + 1 < len(toks) else ""})
            for obj in objects:
                views = list(views_by_obj.get(obj.index, {}).values())
                moving = obj.speed > 0
                attr = {"vehicle": "vehicle.moving" if moving else "vehicle.parked",
                        "pedestrian": "pedestrian.moving" if moving else "pedestrian.standing",
                        "cycle": "cycle.with_rider" if moving else "cycle.without_rider"}.get(obj.kind.group)
                n_lidar = lidar_counts.get(obj.index, 0)
                tables["sample_annotation"].append({
                    "token": obj.tokens[k], "sample_token": sample_tok, "instance_token": obj.instance,
                    "visibility_token": _visibility_token(views), "attribute_tokens": [att_tok[attr]] if attr else [],
                    "translation": obj.center(t), "size": list(obj.kind.size),
                    "rotation": [float(v) for v in _q_yaw(obj.yaw)],
                    "prev": obj.tokens[k - 1] if k else "", "next": obj.tokens[k + 1] if k + 1 < len(obj.tokens) else "",
                    "num_lidar_pts": n_lidar, "num_radar_pts": n_lidar // 10})
            if drivelm:
                keys = _key_objects(objects, views_by_obj, ego, t)
                front = [o.kind.noun for o in objects if "CAM_FRONT" in views_by_obj.get(o.index, {})]
                qa = _frame_qa(keys, front, ego)
                frame = {"key_object_infos": {k.tag: {
                    "Category": k.obj.kind.drivelm_category,
                    "Status": ("Moving" if k.obj.speed > 0 else "Stationary") if k.movable else None,
                    "Visual_description": f"{k.name.capitalize()}.", "2d_bbox": [_r1(v) for v in k.box]} for k in keys},
                    "QA": qa, "image_paths": {ch: f"../nuscenes/{images[ch]}" for ch in
                                              ("CAM_FRONT", "CAM_FRONT_LEFT", "CAM_FRONT_RIGHT", "CAM_BACK",
                                               "CAM_BACK_LEFT", "CAM_BACK_RIGHT")}}
                target = train_json if split == "train" else val_json
                scene_entry = target.setdefault(scene_tok, {
                    "scene_description": f"The ego vehicle drives straight on a road in {location}.",
                    "key_frames": {}})
                if split == "train":
                    scene_entry["key_frames"][sample_tok] = frame
                else:
                    scene_entry["key_frames"][sample_tok] = {
                        "QA": _questions_only(scene_tok, sample_tok, qa), "image_paths": frame["image_paths"]}
            bar.update(1)
    bar.close()
    for table, rows in tables.items():
        _dump(root / VERSION / f"{table}.json", rows)
    result = {"nuscenes": root}
    if drivelm:
        _dump(out / "drivelm" / "v1_1_train_nus.json", train_json)
        _dump(out / "drivelm" / "v1_1_val_nus_q_only.json", val_json)
        result["drivelm"] = out / "drivelm"
    return result


def _writes(drivelm: bool = True, **_: Any) -> list[str]:
    """What :func:`generate` writes into `out` (so ``adapt synthesize`` refuses a clash before rendering)."""
    return ["nuscenes", "drivelm"] if drivelm else ["nuscenes"]


generate.writes = _writes  # type: ignore[attr-defined]


def _key_objects(objects: list[_Object], views_by_obj: dict[int, dict[str, _View]], ego: _Ego, t: float) -> list[_Key]:
    """3-5 key objects: the most visible objects whose best view is a sizeable box, numbered c1, c2, ..."""
    cands = []
    for obj in objects:
        views = views_by_obj.get(obj.index, {})
        if not views:
            continue
        camera = max(STITCH_ORDER, key=lambda c: views[c].area if c in views else -1.0)
        view = views[camera]
        if view.visible_px < 0.5 * view.full_px or min(view.box[2] - view.box[0], view.box[3] - view.box[1]) < 20:
            continue
        xy = ego.to_ego(np.array(obj.center(t))[:, None], t)[:2, 0]
        cands.append(_Key(obj, camera, view.box, (float(xy[0]), float(xy[1]))))
    cands.sort(key=lambda k: -views_by_obj[k.obj.index][k.camera].visible_px)
    keys = sorted(cands[:5], key=lambda k: k.obj.index)
    for n, k in enumerate(keys, 1):
        k.number = n
    return keys
