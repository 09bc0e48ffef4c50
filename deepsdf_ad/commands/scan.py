"""``deepsdf-ad scan``: a mesh -> a virtual depth scan (partial point cloud, PLY, with a sidecar).

The camera's defaults are :class:`deepsdf_ad.data_prep.params.CameraConfig`'s.
"""

from __future__ import annotations

from deepsdf_ad.commands.common import add_resolution, field_default, finite_float, not_inputs, seed, suffix


def add_parsers(sub) -> None:
    from deepsdf_ad.data_prep.params import CameraConfig

    sc = sub.add_parser("scan", help="virtual depth scan of a mesh -> partial point cloud",
                        description="A pinhole depth camera (ray cast, no OpenGL) views MESH; writes the "
                                    "visible points with normals in the mesh's frame, the camera in the "
                                    "header and a sidecar .json.")
    sc.add_argument("mesh", metavar="MESH", help="mesh file")
    sc.add_argument("--out", required=True, metavar="PARTIAL.ply", help="output point cloud")
    sc.add_argument("--azimuth", type=finite_float, default=field_default(CameraConfig, "azimuth"),
                    help="camera azimuth in degrees")
    sc.add_argument("--elevation", type=finite_float, default=field_default(CameraConfig, "elevation"),
                    help="camera elevation in degrees")
    add_resolution(sc, default=field_default(CameraConfig, "resolution"), help="image size in pixels")
    sc.add_argument("--fov", type=finite_float, default=field_default(CameraConfig, "fov"),
                    help="vertical field of view in degrees")
    sc.add_argument("--distance", type=finite_float, default=field_default(CameraConfig, "distance"),
                    help="camera distance / bounding radius")
    sc.add_argument("--noise", type=finite_float, default=field_default(CameraConfig, "noise"),
                    help="depth noise std / bounding radius")
    sc.add_argument("--up", choices=("z", "y"), default=field_default(CameraConfig, "up"),
                    help="vertical axis of the mesh")
    sc.add_argument("--seed", type=seed, default=0, help="seed of the depth noise")
    sc.set_defaults(func=run_scan)


def run_scan(args) -> int:
    import numpy as np

    from deepsdf_ad.data_prep.meshes import load_mesh, normalization
    from deepsdf_ad.data_prep.scans import CameraConfig, save_scan, scan_mesh

    not_inputs(args.out, files=[args.mesh], out_sidecar=True)
    suffix(args.out, (".ply",))  # a point cloud with normals and the camera in its header: PLY only
    mesh = load_mesh(args.mesh)
    cam = CameraConfig(azimuth=args.azimuth, elevation=args.elevation, resolution=args.resolution,
                       fov=args.fov, distance=args.distance, noise=args.noise, up=args.up)
    scan = scan_mesh(mesh, cam, np.random.default_rng(args.seed))
    save_scan(args.out, scan, normalization(mesh))
    print(f"scan: {len(scan.points)} points seen from {np.round(scan.camera, 4).tolist()} -> {args.out}")
    return 0
