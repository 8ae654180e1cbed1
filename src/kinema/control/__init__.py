"""Control signals for the Control models: camera (Plücker), trajectory and edge/other control videos.

Everything here is model-independent: it turns user input (pose files, presets, point tracks, videos)
into arrays the generation pipeline feeds to the VAE or concatenates to the latents. See docs/control.md.
"""

from kinema.control.camera import (
    CAMERA_PRESETS,
    CameraPose,
    PoseFileError,
    camera_latents,
    camera_preset,
    fit_intrinsics,
    format_pose_text,
    latent_plane_motion,
    parse_pose_text,
    plane_motion,
    plucker_embedding,
    plucker_for_preset,
    read_pose_file,
    relative_c2w,
    write_pose_file,
)
from kinema.control.edges import (
    CONTROL_TYPES,
    canny,
    canny_video,
    opencv_available,
    rgb_to_gray,
    validate_control_type,
    validate_control_video,
)
from kinema.control.noise_warp import warped_noise
from kinema.control.trajectory import (
    Track,
    TrackError,
    blob_params,
    interpolate_track,
    load_tracks,
    parse_tracks,
    render_trajectory_video,
    save_tracks,
)

__all__ = [
    "CAMERA_PRESETS",
    "CONTROL_TYPES",
    "CameraPose",
    "PoseFileError",
    "Track",
    "TrackError",
    "blob_params",
    "camera_latents",
    "camera_preset",
    "canny",
    "canny_video",
    "fit_intrinsics",
    "format_pose_text",
    "interpolate_track",
    "latent_plane_motion",
    "load_tracks",
    "opencv_available",
    "parse_pose_text",
    "plane_motion",
    "parse_tracks",
    "plucker_embedding",
    "plucker_for_preset",
    "read_pose_file",
    "relative_c2w",
    "render_trajectory_video",
    "rgb_to_gray",
    "save_tracks",
    "validate_control_type",
    "validate_control_video",
    "warped_noise",
    "write_pose_file",
]
