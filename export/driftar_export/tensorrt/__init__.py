"""TensorRT engines from an export bundle: build.py (engines, stamp), fp16.py (strongly typed graphs), runtime.py."""
