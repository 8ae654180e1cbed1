"""Training data: metadata, token-length buckets, a resumable bucket sampler, loading and a latent cache."""

from .buckets import BucketBatchSampler, BucketPlanner, FrameSampling, Geometry, Plan, SampleRequest
from .cache import LatentCache, model_fingerprint
from .dataset import LoadOptions, VideoDataset, collate_samples, load_pixels
from .metadata import MetadataError, Sample, load_metadata, probe_media, probe_samples

__all__ = [
    "BucketBatchSampler",
    "BucketPlanner",
    "FrameSampling",
    "Geometry",
    "LatentCache",
    "LoadOptions",
    "MetadataError",
    "Plan",
    "Sample",
    "SampleRequest",
    "VideoDataset",
    "collate_samples",
    "load_metadata",
    "load_pixels",
    "model_fingerprint",
    "probe_media",
    "probe_samples",
]
