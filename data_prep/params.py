"""The parameters of every prep kind, as plain dataclasses (no heavy imports): the one place their defaults
are written. The command line reads its defaults from here (:mod:`deepsdf_ad.commands.prep`), and each prep
module re-exports the classes it uses."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SamplingConfig:
    """How SDF samples are drawn (defaults: DeepSDF's preprocessor)."""

    samples: int = 500_000
    """Total samples per shape."""
    variances: tuple[float, float] = (0.005, 0.0005)
    """Variances of the two Gaussian perturbations of surface points (normalised frame)."""
    uniform_fraction: float = 3 / 50
    """Share of samples drawn uniformly in [-1, 1]^3; the rest is split evenly between the two noise
    levels."""
    surface_points: int = 30_000
    """Surface points written to ``DATA/surface``."""


@dataclass
class CameraConfig:
    """A pinhole depth camera looking at the object's centre."""

    azimuth: float = 30.0
    """Degrees about the vertical axis (+z up for ModelNet; +y up with ``up='y'``)."""
    elevation: float = 20.0
    """Degrees above the horizontal plane."""
    resolution: int = 128
    """Image width and height in pixels."""
    fov: float = 50.0
    """Vertical field of view in degrees."""
    distance: float = 2.5
    """Camera distance from the object's centre, in units of the object's bounding radius."""
    noise: float = 0.0
    """Standard deviation of Gaussian depth noise, in units of the bounding radius."""
    up: str = "z"
    """The vertical axis: 'z' (ModelNet) or 'y' (ShapeNet)."""


@dataclass
class DepthCamera:
    """The pinhole intrinsics of a depth image, in pixels, OpenCV/Open3D convention: the camera at the origin,
    x right, y down, z forward (the viewing direction); pixel (u, v) = (column, row) with raw depth d sees
    ``z = d / depth_scale``, ``x = (u - cx) z / fx``, ``y = (v - cy) z / fy``."""

    fx: float
    fy: float
    cx: float
    cy: float
    depth_scale: float = 1000.0
    """Raw depth units per metre (1000: millimetres, as Kinect, RealSense and Azure Kinect write them)."""


@dataclass
class PrepConfig:
    sampling: SamplingConfig
    test_fraction: float = 0.2
    """Share of each category held out as test shapes."""
    seed: int = 0
    scans: int = 0
    """Partial scans written per test shape (``DATA/scans/<category>/<id>_<k>.ply``)."""
    held_out: tuple[str, ...] = ()
    """Keys ``category/id`` that are test shapes whatever ``test_fraction`` says (``prep meshes --held-out
    DIR``: every mesh of a second folder); the other shapes are split by ``test_fraction``."""
    max_ambiguous: float = 0.05
    """Reject a mesh when more than this share of its near-surface samples has an ambiguous sign
    (winding number within 0.1 of 1/2); see :func:`deepsdf_ad.data_prep.meshes.sign_quality`."""
    camera: CameraConfig = field(default_factory=CameraConfig)
    """Camera of the scans; scan k of K is taken at azimuth ``camera.azimuth + 360 k / K``."""


def default_test_fraction(held_out: bool) -> float:
    """The test fraction when none is given: :class:`PrepConfig`'s, or 0 when a held-out folder gives the test
    shapes (``prep meshes --held-out``, ``api.prep_meshes(held_out=...)``)."""
    return 0.0 if held_out else PrepConfig.test_fraction


@dataclass
class SceneConfig:
    """How scenes are composed, sampled and scanned."""

    sampling: SamplingConfig
    """SDF sampling of each whole scene (DeepSDF's distribution, as for single meshes)."""
    scenes: int = 10
    """Scenes in total, train and test."""
    objects: tuple[int, int] = (2, 5)
    """Objects per scene: uniform between these two numbers (inclusive)."""
    room_size: float = 4.0
    """Side of the square room in metres; it maps onto 2 * ROOM_HALF units of the scene frame."""
    gap: float = 0.1
    """Smallest distance between two objects' footprints, in metres."""
    test_fraction: float = 0.2
    """Share of the source meshes (per category) and of the scenes held out for test."""
    seed: int = 0
    scans: int = 0
    """Partial scans written per test scene (``DATA/scans/scene/<id>_<k>.ply``)."""
    max_ambiguous: float = 0.05
    """Leave out a source mesh (and fail a scene) when more than this share of its near-surface samples has an
    ambiguous sign, as ``prep meshes`` does."""
    screen_samples: int = 20_000
    """Near-surface samples used to screen each source mesh's signs."""
    tries: int = 200
    """Random positions tried per object before the scene's placement starts over."""
    restarts: int = 50
    """Times a scene's placement starts over before it is an error."""
    camera: CameraConfig = field(default_factory=lambda: CameraConfig(
        azimuth=30.0, elevation=35.0, resolution=256, fov=60.0, distance=1.6))
    """Camera of the scans: around the room, looking at its centre from above the walls; scan k of K is taken
    at azimuth ``camera.azimuth + 360 k / K``. Distance is in units of the scene's bounding radius."""


@dataclass
class DigitSamplingConfig:
    """How a digit becomes samples."""

    samples: int = 4096
    """Samples per digit."""
    field: str = "sdf"
    """'sdf' (signed distance to the 0.5 contour) or 'height' (intensity)."""
    upsample: int = 8
    """The distance transform runs on a grid this many times finer than the image."""
    stds: tuple[float, float] = (0.04, 0.012)
    """Standard deviations of the two Gaussian perturbations of contour points (frame units)."""
    uniform_fraction: float = 0.1
    """Share of samples drawn uniformly in [-1, 1]^2; the rest is split evenly between the two noise
    levels."""
    contour_points: int = 2000
    """Contour points written to ``DATA/surface``."""


# ---- reading MNIST ---------------------------------------------------------------------------------
