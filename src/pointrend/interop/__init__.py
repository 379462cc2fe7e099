"""Other frameworks' checkpoints as pointrend models (:mod:`pointrend.interop.detectron2`)."""
