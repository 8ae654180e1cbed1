"""kinema: text/image/video-to-video generation (EasyAnimate V4/V5.1 class)."""

__version__ = "0.1.0"
