"""Model builders: PointRend versions of torchvision's segmentation models and their baselines.

``pointrend.models.<builder>(...)`` is the stable way to build a model; the task packages
(``pointrend.instance``, ``pointrend.semantic``) hold the implementations.
"""

__all__: list[str] = []
